"""AWQ int4 checkpoints (AutoAWQ's GEMM layout), weight-only with one scale and zero point per group of
`group_size` input rows and output column.

On disk, the weight is stored transposed ([in, out]): `qweight` int32 [in, out/8] packs eight 4-bit output
columns per word in AWQ's interleaved order (nibble i holds column AWQ_ORDER[i] of its group of eight),
`qzeros` int32 [in/G, out/8] packs the zero points the same way, and `scales` fp16 [in/G, out]; the real
weight is (q - zero) * scale. The reference unpacks and multiplies in the activation dtype; the Triton
dequantize-GEMM comes later and is tested against it.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.quantization.base import QuantLinear, QuantMethod, copy_checked

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a word holds output column AWQ_ORDER[i]
INT4_MAX = 15
AWQ_TENSORS = ("qweight", "qzeros", "scales")


def pack_awq(values: torch.Tensor) -> torch.Tensor:
    """[rows, cols] integers in 0..15 -> int32 [rows, cols/8] in AWQ's nibble order."""
    nibbles = values.to(torch.int64).unflatten(-1, (-1, 8))[..., list(AWQ_ORDER)]
    words = (nibbles << torch.arange(0, 32, 4, device=values.device)).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """int32 [rows, cols/8] -> int32 [rows, cols] values in 0..15 (the inverse of `pack_awq`). Column j
    sits in nibble j // 2 + 4 * (j % 2); the shifts are built on the device so that no host copy happens
    while a CUDA graph is captured."""
    column = torch.arange(8, device=packed.device, dtype=torch.int32)
    shifts = 4 * ((column >> 1) + 4 * (column & 1))
    return ((packed.unsqueeze(-1) >> shifts) & INT4_MAX).flatten(-2)


def quantize_awq(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight [out, in] float -> (qweight, qzeros, scales) in AWQ's layout: asymmetric 4-bit per group of
    `group_size` input rows, the group's range mapped onto 0..15."""
    transposed = weight.float().T  # [in, out]
    groups = transposed.unflatten(0, (-1, group_size))  # [in/G, G, out]
    low, high = groups.amin(dim=1).clamp(max=0), groups.amax(dim=1).clamp(min=0)
    scales = ((high - low) / INT4_MAX).clamp_min(1e-8)
    zeros = (-low / scales).round().clamp(0, INT4_MAX)
    quantized = (groups / scales[:, None] + zeros[:, None]).round().clamp(0, INT4_MAX).flatten(0, 1)
    return pack_awq(quantized), pack_awq(zeros), scales.to(torch.float16)


def dequantize_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 weight [in, out] that the packed tensors stand for."""
    group_size = qweight.shape[0] // scales.shape[0]
    values = unpack_awq(qweight).unflatten(0, (-1, group_size)).float()
    zeros = unpack_awq(qzeros).float()
    return ((values - zeros[:, None]) * scales.float()[:, None]).flatten(0, 1)


class AwqMethod(QuantMethod):
    def __init__(self, group_size: int, checkpoint_is_awq: bool) -> None:
        self.group_size = group_size
        self.checkpoint_tensors = AWQ_TENSORS if checkpoint_is_awq else ("weight",)

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        inp, out = layer.in_features, layer.out_features
        if inp % self.group_size or any(size % 8 for size in layer.out_shards):
            raise ValueError(
                f"AWQ group_size {self.group_size}: input size {inp} must be a multiple of it and output "
                f"shards {list(layer.out_shards)} multiples of 8"
            )
        groups = inp // self.group_size
        layer.qweight = nn.Parameter(torch.empty(inp, out // 8, dtype=torch.int32), requires_grad=False)
        layer.qzeros = nn.Parameter(torch.empty(groups, out // 8, dtype=torch.int32), requires_grad=False)
        layer.scales = nn.Parameter(torch.empty(groups, out, dtype=torch.float16), requires_grad=False)

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        what = layer.describe(name, shard)
        rows = layer.shard_rows(shard)
        packed = slice(None) if shard is None else slice(rows.start // 8, rows.stop // 8)
        if name == "weight" and tensor.is_floating_point() and tensor.dtype != torch.float8_e4m3fn:
            qweight, qzeros, scales = quantize_awq(tensor.to(layer.qweight.device), self.group_size)
            self.load(layer, "qweight", qweight, shard)
            self.load(layer, "qzeros", qzeros, shard)
            self.load(layer, "scales", scales, shard)
        elif name in ("qweight", "qzeros") and tensor.dtype == torch.int32:
            copy_checked(getattr(layer, name).data[:, packed], tensor, what)
        elif name == "scales":
            copy_checked(layer.scales.data[:, rows], tensor, what)
        else:
            raise ValueError(f"{what} ({tensor.dtype}) has no place in an AWQ int4 linear")

    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        weight = dequantize_awq(layer.qweight, layer.qzeros, layer.scales).to(x.dtype)
        y = x @ weight
        return y if bias is None else y + bias
