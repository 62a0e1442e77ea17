"""FP8 block-scaled GEMM (DeepSeek-V3 / Qwen3-FP8 checkpoints): y = x W^T with W float8_e4m3fn [out, in]
and one scale per [block_out, block_in] tile.

On GPUs with fp8 tensor cores (sm_89+) the activations are quantized per token and group of block_in
columns (`quantize_token_groups`, dynamic scales) and each K tile is an fp8 x fp8 dot whose fp32 result is
scaled by the activation group's and the weight tile's scales before it is accumulated. Elsewhere the
weight bytes are decoded into the activation dtype in registers and the activations stay unquantized. The
references are `reference.quantize_token_groups` and `fp8_block_gemm` in `tokenmill.quantization.fp8`.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import split_k as split
from tokenmill.kernels.triton.fp8_quant import quantize_token_groups
from tokenmill.kernels.triton.weight_formats import FP8_BITS_UNIT, e4m3_bits_to_half
from tokenmill.kernels.triton.weight_only_gemm import (
    TILE_ROWS,
    dot_precision,
    k_step,
    program_tile,
    store_tile,
)


@triton.jit(do_not_specialize=["M"])
def _fp8_block_gemm_kernel(
    x_ptr, x_scale_ptr, w_ptr, w_scale_ptr, out_ptr, M, N, K, k_per_split,
    stride_xm, stride_xsm, stride_wn, stride_wsn, stride_os, stride_om,
    BLOCK_OUT: tl.constexpr, FP8_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """BLOCK_K is the weight tiles' block_in, so each K step meets one column of weight scales."""
    m, n, m_mask, n_mask, k_start, k_end = program_tile(M, N, K, k_per_split, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k, k_mask, x = k_step(x_ptr, m, m_mask, k0, K, stride_xm, BLOCK_K)
        w = tl.load(
            w_ptr + n[None, :] * stride_wn + k[:, None], mask=k_mask[:, None] & n_mask[None, :], other=0
        )
        kb = k0 // BLOCK_K
        w_scale = tl.load(w_scale_ptr + (n // BLOCK_OUT) * stride_wsn + kb, mask=n_mask, other=0.0)
        if FP8_DOT:
            part = tl.dot(x.to(tl.float8e4nv, bitcast=True), w.to(tl.float8e4nv, bitcast=True))
            x_scale = tl.load(x_scale_ptr + m * stride_xsm + kb, mask=m_mask, other=0.0)
            acc += part * x_scale[:, None] * w_scale[None, :]
        else:
            part = tl.dot(x, e4m3_bits_to_half(w).to(x.dtype), input_precision=DOT)
            acc += part * (w_scale * FP8_BITS_UNIT)[None, :]
    store_tile(out_ptr, acc, m, n, m_mask, n_mask, stride_os, stride_om)


@functools.cache
def has_fp8_dot(device: torch.device) -> bool:
    """fp8 tensor-core dots: Ada, Hopper, Blackwell (sm_89+). Not on the CPU: Triton's interpreter rounds
    float->fp8 wrongly, so there the weight-decoding path (exact) runs unless a test asks otherwise."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_block_gemm(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block: tuple[int, int],
    split_k: int | None = None,
    fp8_dot: bool | None = None,
) -> torch.Tensor:
    """x [tokens, in] -> [tokens, out] in x's dtype; `fp8_dot` None: where the GPU has it."""
    m, k = x.shape
    n = weight.shape[0]
    block_out, block_k = block
    use_fp8 = has_fp8_dot(x.device) if fp8_dot is None else fp8_dot
    if use_fp8:
        activation, activation_scales = quantize_token_groups(x, block_k)
        activation = activation.view(torch.uint8)
    else:
        activation, activation_scales = x, weight_scale_inv  # the scales are not read without fp8 dots
    block_m, block_n = (16, 64) if m <= TILE_ROWS[0] else (64, 128)
    grid_m, grid_n = triton.cdiv(m, block_m), triton.cdiv(n, block_n)
    splits, k_per_split = split.plan(k, block_k, grid_m * grid_n, x.device, split_k)
    out = split.output(x, n, splits)
    _fp8_block_gemm_kernel[(grid_m, grid_n, splits)](
        activation, activation_scales, weight.view(torch.uint8), weight_scale_inv, out, m, n, k, k_per_split,
        activation.stride(0), activation_scales.stride(0), weight.stride(0), weight_scale_inv.stride(0),
        out.stride(0) if splits > 1 else 0, n,
        BLOCK_OUT=block_out, FP8_DOT=use_fp8, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        DOT=dot_precision(x), num_warps=4, num_stages=3,
    )  # fmt: skip
    return split.reduce(out, splits, x.dtype)
