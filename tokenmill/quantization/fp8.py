"""FP8 (e4m3) weights, in two layouts.

Block-wise (DeepSeek-V3 / Qwen3-FP8 checkpoints): each linear has `weight` (float8_e4m3fn [out, in]) and
`weight_scale_inv` (float32 [ceil(out/bo), ceil(in/bi)]; the real weight is weight * scale_inv of its
tile). Per output channel (`--quantization fp8` on a float checkpoint): one scale per output row, so each
shard quantizes on its own as it loads. The references here dequantize and multiply in the activation
dtype; the Triton GEMMs (`kernels/triton/fp8_gemm.py`, `weight_only_gemm.py`) are tested against them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.kernels.fp8_rows import FP8_DTYPE, FP8_MAX
from tokenmill.kernels.reference import quantize_token_groups
from tokenmill.quantization.base import ChannelScaledMethod, QuantLinear, QuantMethod, copy_checked


def quantize_fp8_blocks(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] float -> (float8_e4m3fn [out, in], float32 scale_inv [ceil(out/bo), ceil(in/bi)]),
    each tile scaled so its largest magnitude maps to the e4m3 maximum (448)."""
    rows, cols = weight.shape
    bo, bi = block
    grid_rows, grid_cols = -(-rows // bo), -(-cols // bi)
    padded = weight.float().new_zeros(grid_rows * bo, grid_cols * bi)
    padded[:rows, :cols] = weight.float()
    tiles = padded.view(grid_rows, bo, grid_cols, bi)
    scale_inv = tiles.abs().amax(dim=(1, 3)).clamp_min(torch.finfo(torch.float32).tiny) / FP8_MAX
    quantized = (tiles / scale_inv[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return quantized.view(grid_rows * bo, grid_cols * bi)[:rows, :cols].contiguous(), scale_inv


def quantize_fp8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] float -> (float8_e4m3fn [out, in], float32 scale [out]): each output row scaled
    so its largest magnitude maps to the e4m3 maximum; weight ~= q * scale[:, None]."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / FP8_MAX
    return (weight / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def dequantize_fp8_blocks(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """The float32 weight that `weight` (e4m3) and its tile scales stand for."""
    rows, cols = weight.shape
    grid_rows, grid_cols = scale_inv.shape
    tiles = scale_inv[:, None, :, None].expand(grid_rows, block[0], grid_cols, block[1])
    return weight.float() * tiles.reshape(grid_rows * block[0], grid_cols * block[1])[:rows, :cols]


def fp8_block_gemm(
    x: torch.Tensor, weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """What the fp8-dot GEMM computes, in float32: activations quantized per token and group of block_in
    columns, times the block-dequantized weight."""
    quantized, scales = quantize_token_groups(x, block[1])
    activation = quantized.float() * scales.repeat_interleave(block[1], dim=1)[:, : x.shape[1]]
    return activation @ dequantize_fp8_blocks(weight, scale_inv, block).T


class Fp8BlockMethod(QuantMethod):
    def __init__(self, block: tuple[int, int], checkpoint_is_fp8: bool) -> None:
        self.block = block
        self.checkpoint_tensors = ("weight", "weight_scale_inv") if checkpoint_is_fp8 else ("weight",)

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        bo, bi = self.block
        for size in layer.out_shards[:-1]:
            if size % bo:
                raise ValueError(
                    f"FP8 weight_block_size {list(self.block)}: fused output shards "
                    f"{list(layer.out_shards)} must be multiples of {bo} so each tile belongs to one shard"
                )
        out, inp = layer.out_features, layer.in_features
        layer.weight = nn.Parameter(torch.empty(out, inp, dtype=FP8_DTYPE), requires_grad=False)
        layer.weight_scale_inv = nn.Parameter(
            torch.empty(-(-out // bo), -(-inp // bi), dtype=torch.float32), requires_grad=False
        )

    def _scale_rows(self, layer: QuantLinear, shard: int | None) -> slice:
        rows = layer.shard_rows(shard)
        if shard is None:
            return rows
        return slice(rows.start // self.block[0], -(-rows.stop // self.block[0]))

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        what = layer.describe(name, shard)
        rows = layer.shard_rows(shard)
        if name == "weight_scale_inv":
            copy_checked(layer.weight_scale_inv.data[self._scale_rows(layer, shard)], tensor, what)
        elif name == "weight" and tensor.dtype == FP8_DTYPE:
            copy_checked(layer.weight.data[rows], tensor, what)
        elif name == "weight" and tensor.is_floating_point():
            quantized, scale_inv = quantize_fp8_blocks(tensor.to(layer.weight.device), self.block)
            copy_checked(layer.weight.data[rows], quantized, what)
            copy_checked(layer.weight_scale_inv.data[self._scale_rows(layer, shard)], scale_inv, what)
        else:
            raise ValueError(f"{what} ({tensor.dtype}) has no place in an FP8 block-quantized linear")

    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        weight = dequantize_fp8_blocks(layer.weight, layer.weight_scale_inv, self.block)
        return F.linear(x, weight.to(x.dtype), bias)


class Fp8ChannelMethod(ChannelScaledMethod):
    """`--quantization fp8` on float weights: e4m3 with one scale per output channel."""

    storage_dtype = FP8_DTYPE
    format_name = "fp8"
    quantize = staticmethod(quantize_fp8_per_channel)
