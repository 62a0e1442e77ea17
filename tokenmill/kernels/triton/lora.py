"""Batched LoRA for many adapters in one step, punica/S-LoRA style (references: `reference.lora_shrink`,
`reference.lora_expand`).

Both kernels run over the per-slot token segments of a `LoRAMapping`: program (m, ..., slot) takes the
m-th tile of BLOCK_M tokens of that slot's segment, gathers their rows, and multiplies them by the slot's
matrices, so a tile always meets one adapter. The grid covers every slot at the step's full token count
and programs past their segment's end exit at once: the launch shape depends only on the token count and
the slot count, which is what lets a CUDA graph replay it for any mix of adapters.

shrink: h[t, s, :] = x[t, :] · A[slot(t), s]ᵀ  (rank ≤ 128, one tile wide)
expand: y[t, shard s] += h[t, s, :] · B[slot(t), shard s]ᵀ  (the adapter's scale is folded into B)
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.lora_mapping import LoRAMapping


@triton.jit
def _segment_rows(sorted_tokens, slot_starts, slot_counts, slot, pid_m, BLOCK_M: tl.constexpr):
    """The token indices of tile `pid_m` of `slot`'s segment, and which of them exist."""
    count = tl.load(slot_counts + slot)
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = offs < count
    tokens = tl.load(sorted_tokens + tl.load(slot_starts + slot) + offs, mask=valid, other=0)
    return tokens.to(tl.int64), valid


@triton.jit
def _shrink_kernel(
    x, a, h, sorted_tokens, slot_starts, slot_counts,
    in_features, rank,
    stride_x, stride_a_slot, stride_a_shard, stride_a_rank, stride_h, stride_h_shard,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, shard, slot = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if pid_m * BLOCK_M < tl.load(slot_counts + slot):
        tokens, valid = _segment_rows(sorted_tokens, slot_starts, slot_counts, slot, pid_m, BLOCK_M)
        offs_r = tl.arange(0, BLOCK_R)
        offs_k = tl.arange(0, BLOCK_K)
        a_base = a + slot.to(tl.int64) * stride_a_slot + shard * stride_a_shard
        acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for k0 in range(0, in_features, BLOCK_K):
            k = k0 + offs_k
            x_tile = tl.load(
                x + tokens[:, None] * stride_x + k[None, :],
                mask=valid[:, None] & (k[None, :] < in_features),
                other=0.0,
            )
            a_tile = tl.load(  # [BLOCK_K, BLOCK_R]: A transposed
                a_base + offs_r[None, :] * stride_a_rank + k[:, None],
                mask=(offs_r[None, :] < rank) & (k[:, None] < in_features),
                other=0.0,
            )
            acc = tl.dot(x_tile, a_tile, acc, input_precision=PRECISION)
        tl.store(
            h + tokens[:, None] * stride_h + shard * stride_h_shard + offs_r[None, :],
            acc.to(h.dtype.element_ty),
            mask=valid[:, None] & (offs_r[None, :] < rank),
        )


@triton.jit
def _expand_kernel(
    y, h, b, sorted_tokens, slot_starts, slot_counts, shard_offsets,
    rank, num_shards,
    stride_y, stride_h, stride_h_shard, stride_b_slot, stride_b_row,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n, program = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, shard = program // num_shards, program % num_shards
    col_begin = tl.load(shard_offsets + shard) + pid_n * BLOCK_N
    col_end = tl.load(shard_offsets + shard + 1)
    if (pid_m * BLOCK_M < tl.load(slot_counts + slot)) & (col_begin < col_end):
        tokens, valid = _segment_rows(sorted_tokens, slot_starts, slot_counts, slot, pid_m, BLOCK_M)
        offs_r = tl.arange(0, BLOCK_R)
        cols = col_begin + tl.arange(0, BLOCK_N)
        h_tile = tl.load(
            h + tokens[:, None] * stride_h + shard * stride_h_shard + offs_r[None, :],
            mask=valid[:, None] & (offs_r[None, :] < rank),
            other=0.0,
        )
        b_tile = tl.load(  # [BLOCK_R, BLOCK_N]: B transposed
            b + slot.to(tl.int64) * stride_b_slot + cols[None, :] * stride_b_row + offs_r[:, None],
            mask=(offs_r[:, None] < rank) & (cols[None, :] < col_end),
            other=0.0,
        )
        delta = tl.dot(h_tile.to(b_tile.dtype), b_tile, input_precision=PRECISION)
        y_ptrs = y + tokens[:, None] * stride_y + cols[None, :]
        mask = valid[:, None] & (cols[None, :] < col_end)
        y_tile = tl.load(y_ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptrs, (y_tile + delta).to(y.dtype.element_ty), mask=mask)


def _token_block(num_tokens: int) -> int:
    """Decode-sized batches take small tiles, so one adapter's few hundred tokens still spread over
    enough programs to fill the GPU; prefill-sized ones take larger tiles, which reuse A and B more."""
    return 16 if num_tokens <= 1024 else 64


def _rank_block(rank: int) -> int:
    return max(16, triton.next_power_of_2(rank))


def _precision(dtype: torch.dtype) -> str:
    """float32 models (the tests) multiply in full precision; tf32 would lose their token-exactness."""
    return "ieee" if dtype == torch.float32 else "tf32"


def lora_shrink(x: torch.Tensor, lora_a: torch.Tensor, mapping: LoRAMapping) -> torch.Tensor:
    num_tokens, in_features = x.shape
    num_slots, shards, rank, _ = lora_a.shape
    h = torch.empty(
        num_tokens, shards, rank, dtype=x.dtype, device=x.device
    )  # expand reads only what is written
    block_m = _token_block(num_tokens)
    grid = (triton.cdiv(num_tokens, block_m), shards, num_slots)
    _shrink_kernel[grid](
        x, lora_a, h, mapping.sorted_tokens, mapping.slot_starts, mapping.slot_counts,
        in_features, rank,
        x.stride(0), lora_a.stride(0), lora_a.stride(1), lora_a.stride(2), h.stride(0), h.stride(1),
        BLOCK_M=block_m, BLOCK_R=_rank_block(rank), BLOCK_K=64, PRECISION=_precision(x.dtype),
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
    y: torch.Tensor, h: torch.Tensor, lora_b: torch.Tensor, out_shards: tuple[int, ...], mapping: LoRAMapping
) -> None:
    num_tokens = y.shape[0]
    num_slots, _, rank = lora_b.shape
    shards = len(out_shards)
    block_m, block_n = _token_block(num_tokens), 64
    grid = (triton.cdiv(num_tokens, block_m), triton.cdiv(max(out_shards), block_n), num_slots * shards)
    _expand_kernel[grid](
        y, h, lora_b, mapping.sorted_tokens, mapping.slot_starts, mapping.slot_counts,
        _offsets_on(y.device, out_shards), rank, shards,
        y.stride(0), h.stride(0), h.stride(1), lora_b.stride(0), lora_b.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_R=_rank_block(rank), PRECISION=_precision(y.dtype),
    )  # fmt: skip
