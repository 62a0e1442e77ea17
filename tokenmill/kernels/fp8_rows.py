"""What passes between an fp8 GEMM and its neighbouring kernels: its input quantized to e4m3 by the kernel
that wrote it, and its output before its scales, for the kernel that reads it.

A projection whose GEMM multiplies fp8 activations (`torch._scaled_mm` with one scale per token) would
otherwise launch a quantization kernel of its own before each call. The RMSNorm holds whole rows anyway,
so it writes `Fp8Rows` instead of model-dtype rows: one launch and one pass over the activations fewer
per projection (SiLU-and-mul returns them too, from a second launch: see `kernels/triton/activation.py`).

With one scale per token and one per output channel, cuBLASLt's row-wise kernels run well below its
per-tensor ones at some shapes (Qwen3-4B's o and down: 1.5x slower at 358 tokens on an H100), and some
GPUs have no row-wise kernel at all. So the GEMM multiplies with unit scales and hands its output over as
`ScaledRows`, whose scales the kernel reading it (RoPE/cache, the residual RMSNorm, SiLU-and-mul)
applies as it loads each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448


@dataclass(frozen=True, eq=False)
class Fp8Rows:
    """Rows [tokens, in] as e4m3 `values` and one float32 scale per row (`scales`, [tokens, 1]):
    row i stands for values[i] * scales[i]. `out_dtype`: the model dtype they were computed in, which the
    GEMM's output takes."""

    values: torch.Tensor
    scales: torch.Tensor
    out_dtype: torch.dtype

    @property
    def shape(self) -> torch.Size:
        return self.values.shape


@dataclass(frozen=True, eq=False)
class ScaledRows:
    """A GEMM's output before its scales: values [tokens, out] (or a view of them [tokens, heads,
    head_dim]); element (i, j) stands for values[i, j] * row_scales[i] * col_scales[j] (j counted along
    the flattened row), rounded to the values' dtype (`resolve`). `split` and `unflatten` cut it as
    the tensor they stand for would be cut (q|k|v into heads)."""

    values: torch.Tensor
    row_scales: torch.Tensor  # float32 [tokens, 1]
    col_scales: torch.Tensor  # float32 [out], contiguous

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def split(self, sizes: list[int], dim: int = -1) -> tuple[ScaledRows, ...]:
        """Blocks of columns of 2-D rows, each with its column scales."""
        assert self.values.dim() == 2 and dim in (-1, 1)
        values, columns = self.values.split(sizes, dim), self.col_scales.split(sizes)
        return tuple(ScaledRows(v, self.row_scales, c) for v, c in zip(values, columns, strict=True))

    def unflatten(self, dim: int, sizes: tuple[int, ...]) -> ScaledRows:
        """Each row as [*sizes] (the column scales stay one per element of the flattened row)."""
        assert dim in (-1, self.values.dim() - 1)
        return ScaledRows(self.values.unflatten(dim, sizes), self.row_scales, self.col_scales)

    def resolve(self) -> torch.Tensor:
        """The scaled rows in the values' dtype: the reference of what a reading kernel loads."""
        rows = self.row_scales.view(-1, *[1] * (self.values.dim() - 1))
        scaled = self.values.float() * rows * self.col_scales.view(self.values.shape[1:])
        return scaled.to(self.values.dtype)
