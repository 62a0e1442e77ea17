"""Split decodes: a long context's keys are divided among several programs per (token, KV head), each
writing a float32 partial output and its log-sum-exp; a second kernel merges them, weighting each part
by its share of the softmax mass. Reference: the unsplit softmax (`reference.paged_attention`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _merge_splits_kernel(
    part_out_ptr, part_lse_ptr, out_ptr, stride_ot, stride_oh, num_heads,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, NUM_SPLITS)
    d = tl.arange(0, BLOCK_D)
    row = (seq * num_heads + head) * NUM_SPLITS + s
    lse = tl.load(part_lse_ptr + row)
    weights = tl.exp(lse - tl.max(lse, 0))
    parts = tl.load(
        part_out_ptr + row[:, None] * HEAD_DIM + d[None, :], mask=d[None, :] < HEAD_DIM, other=0.0
    )
    out = tl.sum(parts * weights[:, None], 0) / tl.sum(weights, 0)
    tl.store(out_ptr + seq * stride_ot + head * stride_oh + d, out, mask=d < HEAD_DIM)


def split_partials(out: torch.Tensor, num_splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 partial outputs and log-sum-exps, a row per (token, head, split), for a split decode of
    `out` ([tokens, heads, head_dim]); unsplit, the kernel never reads them, so `out` stands in."""
    if num_splits == 1:
        return out, out
    tokens, heads, head_dim = out.shape
    rows = tokens * heads * num_splits
    return (
        torch.empty(rows, head_dim, dtype=torch.float32, device=out.device),
        torch.empty(rows, dtype=torch.float32, device=out.device),
    )


def merge_splits(part_out: torch.Tensor, part_lse: torch.Tensor, out: torch.Tensor, num_splits: int) -> None:
    """Combine the splits' partial outputs into `out` by their log-sum-exps (nothing if unsplit)."""
    if num_splits == 1:
        return
    tokens, heads, head_dim = out.shape
    _merge_splits_kernel[(tokens, heads)](
        part_out, part_lse, out, out.stride(0), out.stride(1), heads,
        HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), NUM_SPLITS=num_splits,
    )  # fmt: skip
