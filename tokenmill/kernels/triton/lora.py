"""Batched LoRA for many adapters in one step, punica/S-LoRA style (references: `lora_reference.lora_shrink`,
`lora_reference.lora_expand`).

One shrink and one expand launch serve a whole fused projection (q|k|v, gate|up: every shard at once;
gate|up's expand usually rides in its SiLU-and-mul instead, through `tile_delta`, and o's and down's in
the residual RMSNorm, `norm.py`), over the tiles of a `LoRAMapping`: a program gathers the rows of one
tile (up to TILE_TOKENS tokens, all under one adapter) and multiplies them by that adapter's matrices. The
grid has `max_tiles(tokens, slots)` rows, so its shape depends only on the token and slot counts (a CUDA
graph replays it for any mix of adapters); programs of unused tiles exit at once, and tokens without an
adapter are in no tile. A program reads its adapter's own rank of each shard (`ranks` [slots, shards]: the
slots are padded to the largest rank) and exits at once on a shard the adapter does not target.

shrink: h[p, t, 0, s, :] = x[t, K-part p] · A[slot(t), s, :, K-part p]ᵀ, float32 partial sums
expand: y[t, shard s] += (Σ_p h[p, t, σ, s, :]) · B[slot(t), shard s]ᵀ  (the adapter's scale folded into
B), σ = slot(t) where h holds every slot's x·Aᵀ (the base GEMM's extra columns, `LoRALinear`), else 0

Split-K: the shrink reads `in_features` (the hidden size, thousands) to produce `rank` (tens) columns, so
a decode step of a few tokens has only a few tiles × shards of work. `shrink_splits` cuts the K loop
into parts run by separate programs until the launch has about `_TARGET_PROGRAMS` of them; each part
writes its own partial (no atomics, no zeroed buffer: the expand loads a token's parts together and sums
them).
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.lora_mapping import TILE_TOKENS, LoRAExpand, LoRAMapping, max_tiles

_BLOCK_K = 64
_TARGET_PROGRAMS = 256  # about two per SM on the GPUs we serve on (H100: 132; RTX 5090: 170)
_MAX_SPLITS = 16  # the expand reads every part of a token's h in one round
# Output columns an expand program adds to: 128 where its rank block is at most 32 (H200, qa-358 at rank
# 16: 4.95 us a launch, against 5.23 at 64 columns and 5.43 at 256), else 64, where the wider tile's
# registers (h and B held as the y tile loads) would halve the programs an SM holds.
# The product stays on the tensor cores: one rank column at a time on the CUDA cores took 1.4-2x as long,
# and 32- or 64-token tiles were no faster (H200, docs/benchmarks.md).
_EXPAND_WIDE_BLOCK_N, _EXPAND_BLOCK_N = 128, 64
WIDE_TILE_MAX_RANK = 32  # (as a rank block) the largest rank 128-column tiles take without spilling


@triton.jit
def _tile_rows(sorted_tokens, tile_starts, tile_ends, tile, BLOCK_M: tl.constexpr):
    """The token indices of one tile, and which of its BLOCK_M rows exist."""
    offs = tl.load(tile_starts + tile) + tl.arange(0, BLOCK_M)
    valid = offs < tl.load(tile_ends + tile)
    tokens = tl.load(sorted_tokens + offs, mask=valid, other=0)
    return tokens.to(tl.int64), valid


@triton.jit
def _adapter_rank(ranks, slot, shard, num_shards):
    """The rank of `slot`'s adapter on `shard`: 0 under NO_ADAPTER or where the adapter skips the shard."""
    return tl.load(ranks + tl.maximum(slot, 0) * num_shards + shard, mask=slot >= 0, other=0)


@triton.jit
def _summed_h(
    h, tokens, rows, slot, shard, rank, splits, stride_h_split, stride_h, stride_h_slot, stride_h_shard,
    BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """[len(tokens), BLOCK_R]: Σ over the parts of h of each token's x·Aᵀ under `slot` on `shard`, zero on
    rows outside `rows` and past `rank`, float32."""
    offs_r = tl.arange(0, BLOCK_R)
    offs_s = tl.arange(0, BLOCK_S)
    ptrs = (
        h + offs_s[:, None, None] * stride_h_split + tokens[None, :, None] * stride_h
        + tl.maximum(slot, 0) * stride_h_slot + shard * stride_h_shard + offs_r[None, None, :]
    )  # fmt: skip
    mask = (offs_s[:, None, None] < splits) & rows[None, :, None] & (offs_r[None, None, :] < rank)
    return tl.sum(tl.load(ptrs, mask=mask, other=0.0).to(tl.float32), axis=0)


@triton.jit
def tile_delta(
    h, b, ranks, tokens, rows, slot, shard, shard_begin, cols, col_mask, num_shards, splits,
    stride_h_split, stride_h, stride_h_slot, stride_h_shard, stride_b_slot, stride_b_row,
    BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """[len(tokens), len(cols)] float32: the expand's delta (Σ parts of h)·B[slot]ᵀ of the tile's `rows`
    (those under `slot`) on `shard`'s columns `shard_begin + cols`, on the tensor cores; zero elsewhere.
    For a kernel that reads a projection's output and adds its LoRA delta as it loads it."""
    rank = _adapter_rank(ranks, slot, shard, num_shards)
    h_tile = _summed_h(
        h, tokens, rows, slot, shard, rank, splits, stride_h_split, stride_h, stride_h_slot, stride_h_shard,
        BLOCK_R, BLOCK_S,
    )  # fmt: skip
    offs_r = tl.arange(0, BLOCK_R)
    b_tile = tl.load(  # [BLOCK_R, len(cols)]: B transposed
        b + tl.maximum(slot, 0).to(tl.int64) * stride_b_slot + (shard_begin + cols)[None, :] * stride_b_row
        + offs_r[:, None],
        mask=(offs_r[:, None] < rank) & col_mask[None, :],
        other=0.0,
    )  # fmt: skip
    return tl.dot(h_tile.to(b_tile.dtype), b_tile, input_precision=PRECISION)


@triton.jit
def _shrink_kernel(
    x, a, h, ranks, sorted_tokens, tile_slots, tile_starts, tile_ends,
    in_features, num_shards, k_per_split,
    stride_x, stride_a_slot, stride_a_shard, stride_a_rank, stride_h_split, stride_h, stride_h_shard,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile, shard, part = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot = tl.load(tile_slots + tile)
    rank = _adapter_rank(ranks, slot, shard, num_shards)
    if rank > 0:
        tokens, valid = _tile_rows(sorted_tokens, tile_starts, tile_ends, tile, BLOCK_M)
        offs_r = tl.arange(0, BLOCK_R)
        offs_k = tl.arange(0, BLOCK_K)
        a_base = a + slot.to(tl.int64) * stride_a_slot + shard * stride_a_shard
        k_begin = part * k_per_split
        k_end = tl.minimum(k_begin + k_per_split, in_features)
        acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for k0 in range(k_begin, k_end, BLOCK_K):
            k = k0 + offs_k
            x_tile = tl.load(
                x + tokens[:, None] * stride_x + k[None, :],
                mask=valid[:, None] & (k[None, :] < k_end),
                other=0.0,
            )
            a_tile = tl.load(  # [BLOCK_K, BLOCK_R]: A transposed
                a_base + offs_r[None, :] * stride_a_rank + k[:, None],
                mask=(offs_r[None, :] < rank) & (k[:, None] < k_end),
                other=0.0,
            )
            acc = tl.dot(x_tile, a_tile, acc, input_precision=PRECISION)
        tl.store(
            h + part * stride_h_split + tokens[:, None] * stride_h + shard * stride_h_shard + offs_r[None, :],
            acc,
            mask=valid[:, None] & (offs_r[None, :] < rank),
        )


@triton.jit
def _expand_kernel(
    y, h, b, ranks, sorted_tokens, tile_slots, tile_starts, tile_ends, shard_offsets,
    num_shards, splits,
    stride_y, stride_h_split, stride_h, stride_h_slot, stride_h_shard, stride_b_slot, stride_b_row,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    tile, pid_n, shard = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot = tl.load(tile_slots + tile)
    rank = _adapter_rank(ranks, slot, shard, num_shards)
    col_begin = tl.load(shard_offsets + shard) + pid_n * BLOCK_N
    col_end = tl.load(shard_offsets + shard + 1)
    if (rank > 0) & (col_begin < col_end):
        tokens, valid = _tile_rows(sorted_tokens, tile_starts, tile_ends, tile, BLOCK_M)
        cols = col_begin + tl.arange(0, BLOCK_N)
        col_mask = cols < col_end
        y_ptrs = y + tokens[:, None] * stride_y + cols[None, :]
        mask = valid[:, None] & col_mask[None, :]
        y_tile = tl.load(y_ptrs, mask=mask, other=0.0)  # issued with h's and B's loads, not after the dot
        delta = tile_delta(
            h, b, ranks, tokens, valid, slot, shard, 0, cols, col_mask, num_shards, splits,
            stride_h_split, stride_h, stride_h_slot, stride_h_shard, stride_b_slot, stride_b_row,
            BLOCK_R, BLOCK_S, PRECISION,
        )  # fmt: skip
        tl.store(y_ptrs, (y_tile.to(tl.float32) + delta).to(y.dtype.element_ty), mask=mask)


def rank_block(rank: int) -> int:
    return max(16, triton.next_power_of_2(rank))


def precision(dtype: torch.dtype) -> str:
    """float32 models (the tests) multiply in full precision; tf32 would lose their token-exactness."""
    return "ieee" if dtype == torch.float32 else "tf32"


def shrink_splits(num_tokens: int, shards: int, in_features: int) -> int:
    """How many K parts the shrink of `num_tokens` tokens runs in: enough programs to fill the GPU when
    the tiles alone are few (decode), one part when they are many (prefill, large batches)."""
    programs = triton.cdiv(num_tokens, TILE_TOKENS) * shards
    k_blocks = triton.cdiv(in_features, _BLOCK_K)
    return max(1, min(k_blocks, _MAX_SPLITS, _TARGET_PROGRAMS // programs))


def lora_shrink(
    x: torch.Tensor, lora_a: torch.Tensor, ranks: torch.Tensor, mapping: LoRAMapping
) -> torch.Tensor:
    num_tokens, in_features = x.shape
    num_slots, shards, rank, _ = lora_a.shape
    splits = shrink_splits(num_tokens, shards, in_features)
    k_per_split = triton.cdiv(triton.cdiv(in_features, splits), _BLOCK_K) * _BLOCK_K
    splits = triton.cdiv(in_features, k_per_split)  # no empty part
    h = torch.empty(splits, num_tokens, 1, shards, rank, dtype=torch.float32, device=x.device)
    grid = (max_tiles(num_tokens, num_slots), shards, splits)  # expand reads only what is written
    _shrink_kernel[grid](
        x, lora_a, h, ranks, mapping.sorted_tokens, mapping.tile_slots, mapping.tile_starts,
        mapping.tile_ends, in_features, shards, k_per_split,
        x.stride(0), lora_a.stride(0), lora_a.stride(1), lora_a.stride(2),
        h.stride(0), h.stride(1), h.stride(3),
        BLOCK_M=TILE_TOKENS, BLOCK_R=rank_block(rank), BLOCK_K=_BLOCK_K, PRECISION=precision(x.dtype),
    )  # fmt: skip
    return h


_shard_offsets: dict[tuple[torch.device, tuple[int, ...]], torch.Tensor] = {}


def _offsets_on(device: torch.device, out_shards: tuple[int, ...]) -> torch.Tensor:
    """[shards + 1] int32 first output column of each shard, made once per layout (not in a graph)."""
    key = (device, out_shards)
    if key not in _shard_offsets:
        bounds = [0, *itertools.accumulate(out_shards)]
        _shard_offsets[key] = torch.tensor(bounds, dtype=torch.int32, device=device)
    return _shard_offsets[key]


def lora_expand(
    y: torch.Tensor, h: torch.Tensor, lora_b: torch.Tensor, ranks: torch.Tensor, out_shards: tuple[int, ...],
    mapping: LoRAMapping,
) -> None:  # fmt: skip
    num_tokens = y.shape[0]
    num_slots, _, rank = lora_b.shape
    block_n = _EXPAND_WIDE_BLOCK_N if rank_block(rank) <= WIDE_TILE_MAX_RANK else _EXPAND_BLOCK_N
    grid = (max_tiles(num_tokens, num_slots), triton.cdiv(max(out_shards), block_n), len(out_shards))
    _expand_kernel[grid](
        y, h, lora_b, ranks, mapping.sorted_tokens, mapping.tile_slots, mapping.tile_starts,
        mapping.tile_ends, _offsets_on(y.device, out_shards), len(out_shards), h.shape[0],
        y.stride(0), *h_strides(h), lora_b.stride(0), lora_b.stride(1),
        BLOCK_M=TILE_TOKENS, BLOCK_N=block_n, BLOCK_R=rank_block(rank), BLOCK_S=_parts_block(h),
        PRECISION=precision(y.dtype),
    )  # fmt: skip


def h_strides(h: torch.Tensor) -> tuple[int, int, int, int]:
    """h's strides over parts, tokens, slots and shards; the slot's 0 where h holds the token's own slot
    only (a shrink's), so the kernels index it by the token's slot either way."""
    return h.stride(0), h.stride(1), h.stride(2) if h.shape[2] > 1 else 0, h.stride(3)


def _parts_block(h: torch.Tensor) -> int:
    """BLOCK_S: every part of h in one round of loads."""
    return max(2, triton.next_power_of_2(h.shape[0]))


def expand_operands(lora: LoRAExpand) -> tuple[tuple, dict[str, int]]:
    """A pending expand as the runtime arguments and block sizes of a kernel that adds it (`tile_delta`):
    h, B, ranks, token_slots, sorted_tokens, the parts of h, h's and B's strides."""
    h, b, mapping = lora.h, lora.b, lora.mapping
    args = (h, b, lora.ranks, mapping.token_slots, mapping.sorted_tokens, h.shape[0], *h_strides(h))
    return (*args, b.stride(0), b.stride(1)), {"BLOCK_R": rank_block(b.shape[-1]), "BLOCK_S": _parts_block(h)}
