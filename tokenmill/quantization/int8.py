"""Weight-only int8 (W8A16, FastDeploy's wint8), quantized at load from a float checkpoint: one
symmetric scale per output channel, amax / 127 (int8 values are exact in any activation dtype)."""

from __future__ import annotations

import torch

from tokenmill.quantization.base import ChannelScaledMethod

INT8_MAX = 127


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] float -> (int8 [out, in], float32 scale [out]) with weight ~= q * scale[:, None]."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / INT8_MAX
    quantized = (weight / scale[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return quantized, scale


class Int8WeightOnlyMethod(ChannelScaledMethod):
    storage_dtype = torch.int8
    format_name = "int8"
    quantize = staticmethod(quantize_int8_per_channel)
