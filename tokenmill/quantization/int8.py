"""Weight-only int8 (W8A16, FastDeploy's wint8), quantized at load from a float checkpoint.

Each output channel gets one symmetric scale, amax / 127, so a shard quantizes on its own as it arrives
and no float copy of the layer is ever held. The matmul runs in the activation dtype on the int8 values
(exact there: |q| <= 127) and scales the output columns, the order a W8A16 GEMM applies them in registers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.quantization.base import QuantLinear, QuantMethod, copy_checked

INT8_MAX = 127


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] float -> (int8 [out, in], float32 scale [out]) with weight ~= q * scale[:, None]."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / INT8_MAX
    quantized = (weight / scale[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return quantized, scale


class Int8WeightOnlyMethod(QuantMethod):
    checkpoint_tensors = ("weight",)

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        layer.weight = nn.Parameter(
            torch.empty(layer.out_features, layer.in_features, dtype=torch.int8), requires_grad=False
        )
        layer.weight_scale = nn.Parameter(
            torch.empty(layer.out_features, dtype=torch.float32), requires_grad=False
        )

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        what = layer.describe(name, shard)
        if name != "weight" or not tensor.is_floating_point() or tensor.dtype == torch.float8_e4m3fn:
            raise ValueError(f"{what}: int8 quantization at load reads float weights only")
        rows = layer.shard_rows(shard)
        quantized, scale = quantize_int8_per_channel(tensor.to(layer.weight.device))
        copy_checked(layer.weight.data[rows], quantized, what)
        layer.weight_scale.data[rows] = scale

    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = F.linear(x, layer.weight.to(x.dtype)) * layer.weight_scale.to(x.dtype)
        return y if bias is None else y + bias
