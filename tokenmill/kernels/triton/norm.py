"""RMSNorm with the residual add fused in: one read of each input, one write of each output
(reference: `reference.rms_norm`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr, stride_x, stride_r, stride_o, n_cols, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = x + tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        tl.store(residual_out_ptr + row * stride_r + cols, x, mask=mask)
    h = x.to(tl.float32)
    h = h * tl.rsqrt(tl.sum(h * h, 0) / n_cols + eps)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_o + cols, weight * h.to(x.dtype), mask=mask)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (and residual): [rows, hidden]. Returns (normed, x + residual); the residual is updated in place."""
    out = torch.empty_like(x)
    n_cols = x.shape[-1]
    _add_rms_norm_kernel[(x.shape[0],)](
        x, residual if residual is not None else x, weight, out, residual if residual is not None else x,
        x.stride(0), residual.stride(0) if residual is not None else 0, out.stride(0), n_cols, eps,
        HAS_RESIDUAL=residual is not None, BLOCK=triton.next_power_of_2(n_cols),
        num_warps=4 if n_cols <= 2048 else 8,
    )  # fmt: skip
    return out, residual
