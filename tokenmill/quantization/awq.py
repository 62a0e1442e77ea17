"""AWQ int4 checkpoints (AutoAWQ's GEMM layout), weight-only with one scale and zero point per group of
`group_size` input rows and output column, repacked at load into GPTQ's layout so that AWQ runs the
GPTQ 4-bit kernels.

On disk, the weight is stored transposed ([in, out]): `qweight` int32 [in, out/8] packs eight 4-bit output
columns per word in AWQ's interleaved order (nibble i holds column AWQ_ORDER[i] of its group of eight),
`qzeros` int32 [in/G, out/8] packs the zero points the same way, and `scales` fp16 [in/G, out]; the real
weight is (q - zero) * scale. Packed along the output columns, a decode GEMV's thread holds eight
columns of one input row, and its tiles must be eight columns wide per word; GPTQ's layout (eight input
rows of one column per word) streams any column tile. So each shard's `qweight` is unpacked and packed
again along the input rows, its `qzeros` in sequential order (kept as they are, not minus one as GPTQ v1
stores them: `zero_offset` 0), and `g_idx` is the row order's: the same integers, scales and zero points.
"""

from __future__ import annotations

import torch

from tokenmill.quantization.base import QuantLinear
from tokenmill.quantization.gptq import GptqMethod, pack_sequential

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
    sits in nibble j // 2 + 4 * (j % 2). Runs at load, to repack a checkpoint's tensors, and in the
    reference dequantization."""
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
    """The float32 weight [in, out] that the packed tensors stand for: AutoAWQ's own formula, against
    which the repacked weights are tested."""
    group_size = qweight.shape[0] // scales.shape[0]
    values = unpack_awq(qweight).unflatten(0, (-1, group_size)).float()
    zeros = unpack_awq(qzeros).float()
    return ((values - zeros[:, None]) * scales.float()[:, None]).flatten(0, 1)


def repack_awq(packed: torch.Tensor, name: str) -> torch.Tensor:
    """AWQ's words [rows, cols/8] -> the same values in GPTQ's layout: `qweight` packed along the input
    rows ([rows/8, cols]), `qzeros` in sequential order along the columns ([rows, cols/8])."""
    return pack_sequential(unpack_awq(packed), 4, dim=0 if name == "qweight" else 1)


class AwqMethod(GptqMethod):
    """A 4-bit GPTQ layer without act-order whose tensors arrive in AWQ's layout (or as float weights,
    quantized here the AWQ way: asymmetric, zero points 0..15)."""

    zero_offset = 0
    format_name = "AWQ"

    def __init__(self, group_size: int, checkpoint_is_awq: bool) -> None:
        super().__init__(4, group_size, checkpoint_is_gptq=False)
        self.checkpoint_tensors = AWQ_TENSORS if checkpoint_is_awq else ("weight",)

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        super().create_weights(layer, dtype)
        rows = torch.arange(layer.in_features, dtype=torch.int32, device=layer.g_idx.device)
        layer.g_idx.data.copy_(rows // layer.group_size)
        layer.g_idx_loaded = True

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        what = layer.describe(name, shard)
        columns = layer.out_shards[shard] if shard is not None else layer.out_features
        if name == "weight" and tensor.is_floating_point() and tensor.dtype != torch.float8_e4m3fn:
            for part, value in zip(
                AWQ_TENSORS, quantize_awq(tensor.to(layer.qweight.device), self.group_size)
            ):
                self.load(layer, part, value, shard)
        elif name in ("qweight", "qzeros") and tensor.dtype == torch.int32:
            rows = layer.in_features if name == "qweight" else layer.scales.shape[0]
            if tensor.shape != (rows, columns // 8):
                raise ValueError(f"{what}: checkpoint shape {tuple(tensor.shape)} != {(rows, columns // 8)}")
            super().load(layer, name, repack_awq(tensor, name), shard)
        elif name == "scales":
            super().load(layer, name, tensor, shard)
        else:
            raise ValueError(f"{what} ({tensor.dtype}) has no place in an AWQ int4 linear")
