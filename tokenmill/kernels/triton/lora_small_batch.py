"""A projection's whole LoRA delta for a decode batch of a few tokens in one launch (reference:
`reference.lora_delta`).

The batched kernels (`lora.py`) shrink and expand in two launches, and the shrink reads the projection's
input as a separate tensor. At one token per step launches, not bytes, set the step time, and the
small-batch path never writes the normalised or activated rows. So here each program does the whole
shrink of one row itself, with the input's RMSNorm or SiLU-and-mul in the prologue (the same
`_activations` the fused GEMVs use), then expands its BLOCK_N output columns and adds them in place.
Every program of a row repeats that row's shrink: A is small (rank x hidden, tens of KB, read from L2
after the first program), and the tiles are wide (BLOCK_N x rank), so a launch has only tens of programs.

Fused projections (q|k|v, gate|up, up to three shards) are served at once: A's shards are read as one
[shards * rank, in] matrix, and each output column takes the rank values of its own shard. A row whose
slot is NO_ADAPTER does nothing, so the launch shape depends only on the row count: the decode graphs
replay it for any mix of adapters (the slots are a graph input).
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.skinny_gemm import _activations

# Elements of A ([BLOCK_R, BLOCK_K]) and of B ([BLOCK_N, BLOCK_R]) a program loads at once. The shrink's
# K loop is a chain of L2 round trips that no other program hides, so its steps are few and wide.
_A_TILE = 16384
_B_TILE = 8192
_NORM_BLOCK = 4096
MAX_SHARDS = 3


@triton.jit
def _lora_delta_kernel(
    x_ptr, out_ptr, a_ptr, b_ptr, slots_ptr, norm_weight_ptr, n, k, rank, ranks, shard_end0, shard_end1,
    stride_x, stride_o, stride_a_slot, stride_b_slot, stride_b_row, eps,
    PROLOGUE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    NORM_BLOCK: tl.constexpr,
):  # fmt: skip
    row, tile = tl.program_id(0), tl.program_id(1)
    slot = tl.load(slots_ptr + row)
    if slot >= 0:
        x_row = x_ptr + row.to(tl.int64) * stride_x
        rstd = tl.zeros([1, 1], dtype=tl.float32)
        if PROLOGUE == 1:
            squares = tl.zeros([1, NORM_BLOCK], dtype=tl.float32)
            for k0 in range(0, k, NORM_BLOCK):  # the whole row at once up to 4096 wide
                ks = k0 + tl.arange(0, NORM_BLOCK)
                x = tl.load(x_row + ks[None, :], mask=(ks < k)[None, :], other=0.0).to(tl.float32)
                squares += x * x
            rstd = tl.rsqrt(tl.sum(squares, 1) / k + eps)[:, None]
        r = tl.arange(0, BLOCK_R)
        a_rows = a_ptr + slot.to(tl.int64) * stride_a_slot + r[:, None] * k
        r_mask = r < ranks
        h = tl.zeros([BLOCK_R], dtype=tl.float32)
        for k0 in range(0, k, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_mask = ks < k
            act = _activations(
                x_row + ks[None, :], k_mask[None, :], k, norm_weight_ptr + ks, k_mask, rstd, PROLOGUE
            )
            a = tl.load(a_rows + ks[None, :], mask=r_mask[:, None] & k_mask[None, :], other=0.0)
            h += tl.sum(a.to(tl.float32) * act, 1)
        dtype = out_ptr.dtype.element_ty
        h = h.to(dtype).to(tl.float32)  # the batched path rounds h before its expand too
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_mask = cols < n
        shard = (cols >= shard_end0).to(tl.int32) + (cols >= shard_end1).to(tl.int32)
        within = r[None, :] - shard[:, None] * rank  # which of its shard's rank values r is, per column
        b = tl.load(
            b_ptr + slot.to(tl.int64) * stride_b_slot + cols[:, None] * stride_b_row + within,
            mask=col_mask[:, None] & (within >= 0) & (within < rank),
            other=0.0,
        )
        delta = tl.sum(b.to(tl.float32) * h[None, :], 1).to(dtype).to(tl.float32)
        out_ptrs = out_ptr + row.to(tl.int64) * stride_o + cols
        y = tl.load(out_ptrs, mask=col_mask, other=0.0).to(tl.float32)
        tl.store(out_ptrs, (y + delta).to(dtype), mask=col_mask)


def tile_shape(ranks: int, n: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_R, BLOCK_K) for `ranks` rows of A (shards x rank), `n` outputs and `k` inputs:
    few, wide column tiles (Qwen3-0.6B at rank 16: 32 programs a row for q|k|v, 24 for gate|up, 2 for o
    and down) and 1 to 4 K steps."""
    block_r = max(16, triton.next_power_of_2(ranks))
    block_k = max(16, min(triton.next_power_of_2(k), _A_TILE // block_r))
    block_n = max(16, min(triton.next_power_of_2(n), _B_TILE // block_r))
    return block_n, block_r, block_k


def lora_delta(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    out_shards: tuple[int, ...],
    token_slots: torch.Tensor,
    norm: tuple[torch.Tensor, float] | None = None,
    silu_mul: bool = False,
) -> None:
    """out [rows, n] += B·A·f(x) per row's slot, in place (see `reference.lora_delta`): lora_a [slots,
    shards, rank, in] contiguous, lora_b [slots, n, rank] with its rows' ranks contiguous."""
    rows, n = out.shape
    _, shards, rank, k = lora_a.shape
    assert shards == len(out_shards) <= MAX_SHARDS and sum(out_shards) == n
    assert lora_a.is_contiguous() and lora_b.stride(2) == 1 and out.stride(1) == 1
    assert x.shape[1] == (2 * k if silu_mul else k), "x is the projection's input (gate|up for silu_mul)"
    if rows == 0:
        return
    x = x if x.stride(-1) == 1 else x.contiguous()
    ends = [*itertools.accumulate(out_shards), n, n][:2]  # shard boundaries; past the last shard: n
    block_n, block_r, block_k = tile_shape(shards * rank, n, k)
    norm_weight, eps = norm if norm is not None else (x, 0.0)
    _lora_delta_kernel[(rows, triton.cdiv(n, block_n))](
        x, out, lora_a, lora_b, token_slots, norm_weight, n, k, rank, shards * rank, ends[0], ends[1],
        x.stride(0), out.stride(0), lora_a.stride(0), lora_b.stride(0), lora_b.stride(1), eps,
        PROLOGUE=1 if norm is not None else 2 if silu_mul else 0,
        BLOCK_N=block_n, BLOCK_R=block_r, BLOCK_K=block_k,
        NORM_BLOCK=min(triton.next_power_of_2(k), _NORM_BLOCK), num_warps=8,
    )  # fmt: skip
