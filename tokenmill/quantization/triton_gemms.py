"""The Triton GEMM of each quantized format, standing in for its method's PyTorch `apply` when the model
runs on the Triton kernel backend: `use_triton_gemms` sets them once at load. This module imports Triton,
so only that backend imports it.

Small batches (decode) run the kernels that read the stored bytes and dequantize in registers; from
`DENSE_FROM_TOKENS` tokens on (long prefills, compute-bound) the weight is dequantized once per call and
multiplied by cuBLAS, which beats per-tile dequantization there. FP8 on GPUs with fp8 tensor cores stays
on its fp8 kernels at every size: they are compute-efficient too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from tokenmill.kernels.triton import fp8_gemm
from tokenmill.kernels.triton.weight_only_gemm import PackedWeight, WeightFormat, dequantize, weight_only_gemm
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.base import QuantLinear, QuantMethod
from tokenmill.quantization.fp8 import FP8_DTYPE, FP8_MAX, Fp8BlockMethod, Fp8ChannelMethod
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

DENSE_FROM_TOKENS = 1024  # tokens per call from which dequantize + dense GEMM wins (to tune on the GPU)

Gemm = Callable[[QuantLinear, torch.Tensor], torch.Tensor]


def packed_weight(layer: QuantLinear) -> PackedWeight:
    """The layer's stored tensors as the weight-only kernel reads them, worked out on the first call
    (before any CUDA graph is captured: GPTQ's group order is read from the device) and kept."""
    packed = layer.__dict__.get("packed_weight")
    if packed is None:
        packed = layer.packed_weight = _pack(layer)
    return packed


def _pack(layer: QuantLinear) -> PackedWeight:
    method, sizes = layer.method, (layer.in_features, layer.out_features)
    if isinstance(method, Int8WeightOnlyMethod):
        return PackedWeight(WeightFormat.INT8, layer.weight, layer.weight_scale, *sizes)
    if isinstance(method, Fp8ChannelMethod):
        return PackedWeight(WeightFormat.FP8, layer.weight, layer.weight_scale, *sizes)
    if isinstance(method, AwqMethod):
        return PackedWeight(
            WeightFormat.AWQ, layer.qweight, layer.scales, *sizes, layer.qzeros, group_size=method.group_size
        )
    assert isinstance(method, GptqMethod)
    rows = torch.arange(layer.in_features, device=layer.g_idx.device)
    in_row_order = torch.equal(layer.g_idx, (rows // layer.group_size).to(layer.g_idx.dtype))  # no act-order
    return PackedWeight(
        WeightFormat.GPTQ, layer.qweight, layer.scales, *sizes, layer.qzeros, layer.g_idx, method.bits,
        layer.group_size, in_row_order,
    )  # fmt: skip


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[..., in] -> [tokens, in] with unit column stride, as the kernels index it."""
    x = x.reshape(-1, x.shape[-1])
    return x if x.stride(1) == 1 else x.contiguous()


def weight_only(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    rows, packed = _rows(x), packed_weight(layer)
    if rows.shape[0] >= DENSE_FROM_TOKENS:
        y = rows @ dequantize(packed, x.dtype)
    else:
        y = weight_only_gemm(rows, packed)
    return y.view(*x.shape[:-1], layer.out_features)


def fp8_blocks(layer: QuantLinear, x: torch.Tensor, fp8_dot: bool | None = None) -> torch.Tensor:
    """`fp8_dot` None: where the GPU has fp8 tensor cores."""
    method = layer.method
    assert isinstance(method, Fp8BlockMethod)
    rows = _rows(x)
    fp8_dot = fp8_gemm.has_fp8_dot(x.device) if fp8_dot is None else fp8_dot
    if not fp8_dot and rows.shape[0] >= DENSE_FROM_TOKENS:
        return method.apply(layer, x, None)
    y = fp8_gemm.fp8_block_gemm(rows, layer.weight, layer.weight_scale_inv, method.block, fp8_dot=fp8_dot)
    return y.view(*x.shape[:-1], layer.out_features)


def fp8_channels(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """torch._scaled_mm (cuBLASLt fp8, per-token activation scales) where this torch and GPU run it
    with row-wise scales; else the weight-only kernel, which decodes the e4m3 bytes in registers."""
    if not _rowwise_scaled_mm(x.device):
        return weight_only(layer, x)
    rows = _rows(x)
    scale = rows.abs().amax(dim=1, keepdim=True).float().clamp_min(torch.finfo(torch.float32).tiny) / FP8_MAX
    quantized = (rows / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    y = torch._scaled_mm(
        quantized, layer.weight.T, scale_a=scale, scale_b=layer.weight_scale[None, :], out_dtype=x.dtype
    )
    return y.view(*x.shape[:-1], layer.out_features)


@functools.cache
def _rowwise_scaled_mm(device: torch.device) -> bool:
    """Whether torch._scaled_mm takes per-row/per-column scales here (Hopper, and newer torch on Ada and
    Blackwell): asked once with a tiny product rather than from a table of versions."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return False
    a = torch.ones(16, 32, device=device).to(FP8_DTYPE)
    b = torch.ones(16, 32, device=device).to(FP8_DTYPE)
    scale_a, scale_b = torch.ones(16, 1, device=device), torch.ones(1, 16, device=device)
    try:
        torch._scaled_mm(a, b.T, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError):
        return False
    return True


def _gemm_for(method: QuantMethod) -> Gemm | None:
    if isinstance(method, (Int8WeightOnlyMethod, AwqMethod, GptqMethod)):
        return weight_only
    if isinstance(method, Fp8ChannelMethod):
        return fp8_channels
    if isinstance(method, Fp8BlockMethod) and _kernel_reads_blocks(method.block):
        return fp8_blocks
    return None  # unquantized: cuBLAS already; or a layout the kernels do not take: the reference


def _kernel_reads_blocks(block: tuple[int, int]) -> bool:
    """The FP8 kernel steps through K one weight block at a time: a power of two of at least 16."""
    return block[1] >= 16 and block[1] & (block[1] - 1) == 0


def use_triton_gemms(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.method.gemm = _gemm_for(module.method)
