"""The fused small-batch path's element-wise work around the quantized GEMVs (`quant_gemv`), as
`skinny_gemm`'s bf16 GEMVs do it and through its `prologue_activations`: the RMSNorm of a token row or
SiLU(gate) * up of a gate|up row in the prologue, each program normalising its own row (a row is
short, and one program per (tile, row) keeps the rows independent), then the bias added to the fp32
sums and the residual after rounding to the activation dtype, as the unfused ops round them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.skinny_gemm import prologue_activations, rows_rstd

NORM_BLOCK = 1024  # input elements per step of the RMSNorm prologue's sum of squares
PROLOGUES = {"none": 0, "norm": 1, "silu_mul": 2}  # skinny_gemm's PROLOGUE values


@dataclass(frozen=True)
class Fusion:
    """The element-wise work a GEMV does around its product for the fused small-batch path: the input
    row's RMSNorm (`norm`: weight, eps) or SiLU(gate) * up (`silu_mul`: x is gate|up, twice the weight's
    input width), then `bias` added to the fp32 sums and `residual` after rounding to x's dtype (as a
    separate add would)."""

    norm: tuple[torch.Tensor, float] | None = None
    silu_mul: bool = False
    bias: torch.Tensor | None = None
    residual: torch.Tensor | None = None

    def in_features(self, x: torch.Tensor) -> int:
        return x.shape[1] // 2 if self.silu_mul else x.shape[1]

    def kernel_args(self, x: torch.Tensor) -> dict[str, object]:
        """The fusion's kernel arguments (placeholder pointers where it has nothing)."""
        norm_weight, eps = self.norm or (x, 0.0)
        prologue = "norm" if self.norm is not None else "silu_mul" if self.silu_mul else "none"
        bias, residual = self.bias, self.residual
        return dict(
            norm_weight_ptr=norm_weight, bias_ptr=x if bias is None else bias,
            residual_ptr=x if residual is None else residual,
            stride_r=0 if residual is None else residual.stride(0), eps=eps, PROLOGUE=PROLOGUES[prologue],
            HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
            NORM_BLOCK=min(NORM_BLOCK, triton.next_power_of_2(self.in_features(x))),
        )  # fmt: skip


NO_FUSION = Fusion()


@triton.jit
def row_rstd(x_row, K, eps, PROLOGUE: tl.constexpr, NORM_BLOCK: tl.constexpr):
    """[1, 1]: the RMSNorm factor 1 / sqrt(mean(x^2) + eps) of the row under PROLOGUE 1, else 0."""
    one_row = tl.arange(0, 1)
    return rows_rstd(x_row + one_row[:, None], one_row == 0, K, eps, PROLOGUE, 1, NORM_BLOCK)


@triton.jit
def row_inputs(x_row, k, K, norm_weight_ptr, rstd, PROLOGUE: tl.constexpr):
    """[1, len(k)] fp32 inputs at columns k of the row, after the prologue
    (`skinny_gemm.prologue_activations`)."""
    k_mask = k < K
    x_ptrs, norm_ptrs = x_row + k[None, :], norm_weight_ptr + k
    return prologue_activations(x_ptrs, k_mask[None, :], K, norm_ptrs, k_mask, rstd, PROLOGUE)


@triton.jit
def store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r,
              HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr):  # fmt: skip
    """fp32 sums y [BLOCK_N] (+ bias), rounded to the output dtype (+ residual), stored at columns n."""
    if HAS_BIAS:
        y += tl.load(bias_ptr + n, mask=n_mask, other=0.0).to(tl.float32)
    out = y.to(out_ptr.dtype.element_ty)
    if HAS_RESIDUAL:
        out = out + tl.load(residual_ptr + row * stride_r + n, mask=n_mask, other=0.0)
    tl.store(out_ptr + row * stride_o + n, out, mask=n_mask)
