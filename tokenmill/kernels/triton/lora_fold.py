"""A LoRA delta folded into the small-batch GEMVs of `skinny_gemm` (reference: `reference.lora_delta`):
each row's B·A·f(x) costs no launch of its own.

At one token per step launches, not bytes, set the step time, and a separate delta kernel per projection
cost half a decode step (Qwen3-0.6B on an H100: 4 launches, 16.9 us per layer). So the GEMV that computes
a projection also computes its delta: the shrink s = A·a rides in its K loop on the activation blocks `a`
the weight multiplies (after the same RMSNorm or SiLU-and-mul prologue), and the expand B·s runs in its
epilogue. Every program of a row repeats the row's shrink; A is small (rank x hidden, tens of KB, read
from L2 after the first program), and a program reads only the rank rows of its columns' shard.

Each row keeps its own adapter (the slots are a graph input, so one decode graph serves any mix): the
one-token tiles read their row's A; the tensor-core tiles (2 to 8 rows) run one dot per distinct adapter
among their rows. A row under NO_ADAPTER, and a shard its adapter does not target (rank 0 in
`LoRAWeights.ranks`), load nothing.
"""

from __future__ import annotations

import itertools

import triton
import triton.language as tl
from torch import Tensor

from tokenmill.kernels.lora_mapping import LoRAWeights

# A elements per one-token program per K step, beside the weight tile's 8192: 16384 (fewer K steps for o
# and down) took 180 registers a thread on sm_90, against 64 here, and halved the programs resident per SM
LORA_TILE_ELEMENTS = 8192
MAX_LORA_SHARDS = 3  # shard boundaries the epilogue tells apart: q|k|v at most
MIN_BLOCK_R = 16  # the smallest dimension a tensor-core dot takes
_PAST_SLOTS = tl.constexpr(1 << 30)  # above every slot: "no adapter left" in `shrink_by_adapter`


@triton.jit
def adapter_rows(ranks_ptr, slot, r0, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr):
    """Rows r0 .. r0 + BLOCK_R of `slot`'s stacked A ([SHARDS * MAX_RANK, k], each shard's rank padded to
    MAX_RANK): their indices in the slot, and which hold the adapter (none under NO_ADAPTER, nor in a
    shard the adapter does not target, so those rows cost no loads)."""
    r = r0 + tl.arange(0, BLOCK_R)
    shard = r // MAX_RANK
    slots = slot + tl.zeros([BLOCK_R], dtype=tl.int32)  # a block: the interpreter masks with no scalar
    rank = tl.load(ranks_ptr + slots * SHARDS + shard, mask=(slots >= 0) & (shard < SHARDS), other=0)
    return r, (r % MAX_RANK) < rank


@triton.jit
def first_rank_row(
    first_col, shard_end0, shard_end1, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr
):
    """The first A row a column tile starting at `first_col` reads: its shard's first, or 0 where
    BLOCK_R covers every shard."""
    r0 = 0
    if BLOCK_R < SHARDS * MAX_RANK:
        r0 = ((first_col >= shard_end0).to(tl.int32) + (first_col >= shard_end1).to(tl.int32)) * MAX_RANK
    return r0


@triton.jit
def shrink_by_adapter(
    acc, a, row_slots, lora_a_ptr, ranks_ptr, ks, k_mask, k, r0,
    SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """acc [BLOCK_M, BLOCK_R] += the activations `a` [BLOCK_M, BLOCK_K] times their rows' A: one
    tensor-core dot per distinct adapter among the rows, over its own rows only (the others zeroed), so
    one adapter costs one dot and a mix costs one per adapter present."""
    slot = tl.min(tl.where(row_slots >= 0, row_slots, _PAST_SLOTS))
    while slot < _PAST_SLOTS:
        r, held = adapter_rows(ranks_ptr, slot, r0, SHARDS, MAX_RANK, BLOCK_R)
        a_rows = (slot * SHARDS * MAX_RANK + r).to(tl.int64) * k
        lora_a = tl.load(
            lora_a_ptr + a_rows[:, None] + ks[None, :], mask=held[:, None] & k_mask[None, :], other=0.0
        )
        own = tl.where((row_slots == slot)[:, None], a, 0.0)
        acc = tl.dot(own.to(lora_a.dtype), tl.trans(lora_a), acc, input_precision="ieee")
        slot = tl.min(tl.where(row_slots > slot, row_slots, _PAST_SLOTS))
    return acc


@triton.jit
def expand(
    s, row_slots, cols, col_mask, lora_b_ptr, ranks_ptr, n, r0, shard_end0, shard_end1,
    SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """The [BLOCK_M, BLOCK_N] delta of s [BLOCK_M, BLOCK_R] (rows r0 .. r0 + BLOCK_R of A·f(x)): each
    row's B, of its own slot, each column taking the rank values of its own shard."""
    col_shard = (cols >= shard_end0).to(tl.int32) + (cols >= shard_end1).to(tl.int32)
    within = r0 + tl.arange(0, BLOCK_R)[None, :] - col_shard[:, None] * MAX_RANK  # [BLOCK_N, BLOCK_R]
    slots = row_slots[:, None]
    rank = tl.load(
        ranks_ptr + slots * SHARDS + col_shard[None, :], mask=(slots >= 0) & col_mask[None, :], other=0
    )
    b = tl.load(
        lora_b_ptr
        + (slots[:, :, None].to(tl.int64) * n + cols[None, :, None]) * MAX_RANK
        + within[None, :, :],
        mask=(within[None, :, :] >= 0) & (within[None, :, :] < rank[:, :, None]),
        other=0.0,
    )
    return tl.sum(b.to(tl.float32) * s[:, None, :], 2)


def fold_args(lora: LoRAWeights | None, n: int, block_n: int, placeholder: Tensor) -> dict[str, object]:
    """The LoRA arguments of a launch. BLOCK_R covers the rank rows of one shard where every column tile
    lies in one shard (the shard boundaries are multiples of BLOCK_N, as head sizes make them), else of
    every shard. Without LoRA, placeholders that keep the no-LoRA kernel one compiled variant."""
    if lora is None:
        pointers = dict.fromkeys(("lora_a_ptr", "lora_b_ptr", "ranks_ptr", "slots_ptr"), placeholder)
        return dict(**pointers, shard_end0=0, shard_end1=0, HAS_LORA=False, SHARDS=1, MAX_RANK=1, BLOCK_R=1)
    _, shards, max_rank, _ = lora.a.shape
    assert shards == len(lora.out_shards) <= MAX_LORA_SHARDS and sum(lora.out_shards) == n
    assert lora.a.is_contiguous() and lora.b.is_contiguous() and lora.ranks.is_contiguous()
    ends = [*itertools.accumulate(lora.out_shards)][:-1]
    one_shard_tiles = all(end % block_n == 0 for end in ends)
    block_r = max(MIN_BLOCK_R, triton.next_power_of_2(max_rank if one_shard_tiles else shards * max_rank))
    shard_end0, shard_end1 = [*ends, n, n][:2]
    return dict(
        lora_a_ptr=lora.a, lora_b_ptr=lora.b, ranks_ptr=lora.ranks, slots_ptr=lora.token_slots,
        shard_end0=shard_end0, shard_end1=shard_end1, HAS_LORA=True, SHARDS=shards, MAX_RANK=max_rank,
        BLOCK_R=block_r,
    )  # fmt: skip
