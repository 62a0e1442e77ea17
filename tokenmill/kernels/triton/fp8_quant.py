"""The activation side of an fp8 GEMM, for the kernels beside it: quantizing rows (or groups of a row) to
e4m3 with one dynamic scale each, and applying a GEMM output's scales as it is loaded (`Fp8Rows`,
`ScaledRows` in `kernels/fp8_rows.py`; references: `reference.quantize_token_groups`,
`ScaledRows.resolve`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels import fp8_rows

FP8_MAX = tl.constexpr(fp8_rows.FP8_MAX)
FLOAT32_TINY = tl.constexpr(torch.finfo(torch.float32).tiny)


@triton.jit
def quantize_groups(x, AXIS: tl.constexpr):
    """Values -> (their e4m3 bits as uint8, float32 scales): one scale for each slice of x along AXIS (a
    row of a 2D block for AXIS 1, the whole of a 1D block for AXIS 0), its dimension kept. Masked-off
    elements must be 0. The rule of every kernel that writes `Fp8Rows`."""
    x = x.to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), AXIS, keep_dims=True), FLOAT32_TINY) / FP8_MAX
    q = tl.clamp(x / scale, -FP8_MAX, FP8_MAX).to(tl.float8e4nv)
    return q.to(tl.uint8, bitcast=True), scale


@triton.jit
def apply_scales(x, row_scale_ptr, col_scale_ptr, row, cols, mask):
    """Elements `cols` of row `row` of a GEMM's output loaded before their scales (`ScaledRows`), scaled
    and rounded back to x's dtype, as `ScaledRows.resolve` does."""
    col_scales = tl.load(col_scale_ptr + cols, mask=mask, other=0.0)
    return (x.to(tl.float32) * tl.load(row_scale_ptr + row) * col_scales).to(x.dtype)


ELEMENTS_PER_PROGRAM = 4096  # groups of a row that one program quantizes together: 32 values a thread


@triton.jit(do_not_specialize=["M", "stride_sm", "stride_sg"])  # one variant for either scale layout
def _quantize_token_groups_kernel(
    x_ptr, q_ptr, scale_ptr, M, K, stride_xm, stride_qm, stride_sm, stride_sg, GROUP: tl.constexpr,
    BLOCK: tl.constexpr, GROUPS: tl.constexpr,
):  # fmt: skip
    """Program (row, g): groups g * GROUPS, ..., g * GROUPS + GROUPS - 1 of the row; rows from M on (the
    padding) read as zeros."""
    row = tl.program_id(0).to(tl.int64)
    group = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
    within = tl.arange(0, BLOCK)
    k = group[:, None] * GROUP + within[None, :]
    mask = (k < K) & (within < GROUP)[None, :]
    columns_read = tl.where(row < M, K, 0)  # a padding row reads none
    x = tl.load(x_ptr + row * stride_xm + k, mask=mask & (k < columns_read), other=0.0)
    q, scale = quantize_groups(x, 1)
    tl.store(q_ptr + row * stride_qm + k, q, mask=mask)
    tl.store(
        scale_ptr + row * stride_sm + group[:, None] * stride_sg, scale, mask=(group * GROUP < K)[:, None]
    )


def quantize_token_groups(
    x: torch.Tensor, group: int, tokens_major: bool = False, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [tokens, in] -> (float8_e4m3fn [tokens, in], float32 scales [tokens, ceil(in/group)]), each
    group of `group` columns of a row scaled so its largest magnitude maps to the e4m3 maximum.
    `tokens_major`: the scales stored with the tokens contiguous, as cuBLAS's block-scaled GEMM reads them.
    `rows` (at least tokens): that many rows out, those past x's zeros, for a GEMM that takes padded rows.
    A program takes up to ELEMENTS_PER_PROGRAM values of a row: one program a group of 128 spent more on
    its launch than on its 256 bytes."""
    tokens, k = x.shape
    m = tokens if rows is None else rows
    assert m >= tokens, f"{m} rows out cannot hold {tokens} tokens"
    groups = triton.cdiv(k, group)
    q = torch.empty(m, k, dtype=torch.float8_e4m3fn, device=x.device)
    if tokens_major:
        scales = torch.empty(groups, m, dtype=torch.float32, device=x.device).t()
    else:
        scales = torch.empty(m, groups, dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(group)
    per_program = min(triton.next_power_of_2(groups), max(1, ELEMENTS_PER_PROGRAM // block))
    _quantize_token_groups_kernel[(m, triton.cdiv(groups, per_program))](
        x, q.view(torch.uint8), scales, tokens, k, x.stride(0), q.stride(0), scales.stride(0),
        scales.stride(1), GROUP=group, BLOCK=block, GROUPS=per_program,
        num_warps=max(4, min(16, per_program * block // 1024)),
    )  # fmt: skip
    return q, scales
