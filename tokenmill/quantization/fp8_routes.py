"""The fp8 formats' dense routes, which `triton_gemms.gemm_for` gives them from `DENSE_FROM_TOKENS` tokens
a call: `torch._scaled_mm` (cuBLASLt's fp8 tensor cores) on activations quantized per token for fp8 per
channel, per token and 128 columns for 128 x 128 FP8 blocks (`block_mm_rows`, where cuBLAS takes block
scales).

The product runs with unit scales where it can (`unscaled_mm_rows`): cuBLASLt's per-tensor kernels beat its
row-wise ones at most Qwen3 shapes, and some GPUs have only them. Its output then goes to the kernel that
reads it as `ScaledRows`, or through a scaling pass of its own where none does.

The unit-scaled product runs cuBLASLt's fast-accumulation kernels (`use_fast_accum`), which add the tensor
cores' partial sums without promoting them to fp32 at every step, as vLLM's CUTLASS fp8 kernels do on
Hopper. On an H100 they take Qwen3-4B's steady qa-358 decode step from 7.58 to 6.96 ms (gate|up alone at 358
tokens: 46.7 -> 35.9 us), on an H200 they change nothing; a bf16 output's mean relative error against a
float64 product of the same fp8 operands goes from 1.4e-3 (bf16's own rounding) to 1.6-2.4e-3, small
against e4m3's rounding of each operand (up to 1/16 of a value; docs/benchmarks.md, 2026-11-23 eighth
session). The row-wise product (`scaled_mm_rows`: layers with a bias, tensor-parallel shards, LoRA) keeps
exact accumulation: its fast kernels raised a Qwen3-0.6B-shaped model's mean abs logprob error from
0.088 to 0.103 (sixth session).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from tokenmill.kernels.fp8_rows import FP8_DTYPE, Fp8Rows, ScaledRows
from tokenmill.kernels.triton import fp8_quant
from tokenmill.quantization.base import QuantLinear
from tokenmill.quantization.fp8 import Fp8BlockMethod

CUBLAS_BLOCK = (128, 128)  # the weight blocks cuBLAS's block-scaled fp8 GEMM takes (activations: 1 x 128)
CUBLAS_ROW_MULTIPLE = 4  # its token rows (the activation scales' leading dimension) come in fours
CUBLAS_BLOCKS_MULTIPLE = 4  # blocks along in and out in fours (the weight scales' dimensions): as measured


@functools.cache
def scaled_mm_scales(device: torch.device) -> Literal["row", "tensor"] | None:
    """The scales torch._scaled_mm takes here: per row and column ("row": Hopper, and newer torch on Ada),
    per tensor only ("tensor": cuBLASLt has no row-wise fp8 kernel for some GPUs, e.g. sm_120 under
    torch 2.10), or none (no fp8 GEMM, or no GPU). Asked once with tiny products rather than from a table
    of versions."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return None
    a = torch.ones(16, 32, device=device).to(FP8_DTYPE)
    b = torch.ones(16, 32, device=device).to(FP8_DTYPE)
    for kind, scale_a, scale_b in (
        ("row", torch.ones(16, 1, device=device), torch.ones(1, 16, device=device)),
        ("tensor", _unit_scale(device), _unit_scale(device)),
    ):
        try:
            torch._scaled_mm(a, b.T, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
        except (RuntimeError, NotImplementedError):
            continue
        return kind
    return None


@functools.cache
def has_cublas_blocks(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` takes DeepSeek-style block scales here (cuBLAS 12.9+ on sm_90, PyTorch
    2.9+): one small GEMM, four blocks each way (as `cublas_takes_blocks` requires), every scale distinct,
    against its fp32 sum; run once, eagerly (the loader asks before any CUDA graph). A refusal is
    synchronised first, so that an error left on the device surfaces here rather than in a later kernel."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) != (9, 0):
        return False
    blocks, rows, (block_out, block_in) = CUBLAS_BLOCKS_MULTIPLE, CUBLAS_ROW_MULTIPLE, CUBLAS_BLOCK
    x = torch.ones(rows, blocks * block_in, device=device).to(FP8_DTYPE)
    weight = torch.ones(blocks * block_out, blocks * block_in, device=device).to(FP8_DTYPE)
    steps = torch.arange(blocks * max(rows, blocks), device=device, dtype=torch.float32)
    x_scales = 1.0 + steps[: rows * blocks].view(blocks, rows).t()  # [tokens, in blocks], tokens contiguous
    weight_scales = 0.5 + steps[: blocks * blocks].view(blocks, blocks)  # [out blocks, in blocks]
    try:
        y = torch._scaled_mm(
            x, weight.t(), scale_a=x_scales, scale_b=weight_scales.t(), out_dtype=torch.bfloat16
        )
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        torch.cuda.synchronize(device)
        return False
    expected = block_in * (x_scales @ weight_scales.t()).repeat_interleave(block_out, dim=1)
    return torch.allclose(y.float(), expected, rtol=1e-2, atol=0.0)


def cublas_takes_blocks(layer: QuantLinear) -> bool:
    """Whether `block_mm_rows` can multiply `layer`: FP8 CUBLAS_BLOCK blocks tiling its weight whole, in
    multiples of CUBLAS_BLOCKS_MULTIPLE each way (Qwen3's projections all are)."""
    method = layer.method
    if not (isinstance(method, Fp8BlockMethod) and method.block == CUBLAS_BLOCK):
        return False
    sizes = (layer.out_features, layer.in_features)
    return all(
        size % (CUBLAS_BLOCKS_MULTIPLE * block) == 0 for size, block in zip(sizes, CUBLAS_BLOCK, strict=True)
    )


def block_mm_rows(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
    """bf16 rows [tokens, in] -> [tokens, out] through cuBLAS's block-scaled fp8 GEMM (`cublas_takes_blocks`
    layers): the activations quantized per token and 128 columns as the Triton kernel's are, their scales
    stored token-major, the rows padded to CUBLAS_ROW_MULTIPLE by the quantization itself (padding the
    bf16 rows took 0.67 ms of a 7.5 ms qa-358 decode step of Qwen3-4B on an H200). About twice the Triton
    kernel's speed on Hopper (Qwen3-8B layer at 2,048 tokens: H200 2.00 -> 0.90 ms, H100 2.00 -> 0.87;
    docs/benchmarks.md, 2026-11-24, eighteenth session)."""
    tokens = rows.shape[0]
    padded = tokens + -tokens % CUBLAS_ROW_MULTIPLE
    values, scales = fp8_quant.quantize_token_groups(rows, CUBLAS_BLOCK[1], tokens_major=True, rows=padded)
    out = torch._scaled_mm(
        values, layer.weight.t(), scale_a=scales, scale_b=layer.weight_scale_inv.t(),
        out_dtype=torch.bfloat16,
    )  # fmt: skip
    return out[:tokens]


def resolved_mm_rows(layer: QuantLinear, rows: torch.Tensor | Fp8Rows) -> torch.Tensor:
    """`scaled_mm_rows` where torch._scaled_mm takes per-tensor scales only: the unit-scaled product, then
    its scales in a pass of their own."""
    return unscaled_mm_rows(layer, rows).resolve()


def scaled_mm_rows(layer: QuantLinear, rows: torch.Tensor | Fp8Rows) -> torch.Tensor:
    """torch._scaled_mm (cuBLASLt fp8) with per-token activation scales and per-channel weight scales.
    Model-dtype rows are quantized by one kernel (a row per program: as seven PyTorch ops, 144 of them
    per Qwen3-4B step cost 4 ms at 358 tokens, more than fp8 saved); the RMSNorm and SiLU-and-mul
    kernels hand over `Fp8Rows` instead, quantized as they wrote them."""
    rows = _fp8_rows(rows)
    return torch._scaled_mm(
        rows.values, layer.weight.T, scale_a=rows.scales, scale_b=layer.weight_scale[None, :],
        out_dtype=rows.out_dtype,
    )  # fmt: skip


def unscaled_mm_rows(layer: QuantLinear, rows: torch.Tensor | Fp8Rows) -> ScaledRows:
    """`scaled_mm_rows` with unit scales, which cuBLASLt runs on its per-tensor kernels (faster than its
    row-wise ones at many shapes, and on GPUs without them): the per-token and per-channel scales are
    left to the kernel that reads the output."""
    rows = _fp8_rows(rows)
    one = _unit_scale(rows.values.device)
    values = torch._scaled_mm(
        rows.values, layer.weight.T, scale_a=one, scale_b=one, out_dtype=rows.out_dtype, use_fast_accum=True
    )
    return ScaledRows(values, rows.scales, layer.weight_scale)


def _fp8_rows(rows: torch.Tensor | Fp8Rows) -> Fp8Rows:
    """Rows quantized per token, by their own kernel where the kernel that wrote them did not."""
    if isinstance(rows, Fp8Rows):
        return rows
    return Fp8Rows(*fp8_quant.quantize_token_groups(rows, rows.shape[1]), rows.dtype)


@functools.cache
def _unit_scale(device: torch.device) -> torch.Tensor:
    return torch.ones((), dtype=torch.float32, device=device)
