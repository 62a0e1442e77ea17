"""GPTQ checkpoints (AutoGPTQ / GPTQModel `gptq` v1 format), 4- or 8-bit weight-only with a scale and
zero point per group of input rows; with `desc_act` (act-order) the groups follow `g_idx`, not the row order.

On disk, `qweight` int32 [in * bits / 32, out] packs consecutive input rows into each word (value i at bit
i * bits), `qzeros` int32 [groups, out * bits / 32] packs consecutive output columns the same way and
stores zero - 1 (the v1 convention), `scales` fp16 [groups, out], `g_idx` int32 [in] names each input row's
group. The real weight [in, out] is (q - zero) * scale of the row's group. PyTorch reference only.

Act-order layers are stored in group order once loaded (`GptqMethod.after_loading`), with the input
order kept to gather x's columns by: the kernels then read one group per K tile, as for any other
checkpoint (exllama and Marlin do the same).
"""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.quantization.base import QuantLinear, QuantMethod, copy_checked

GPTQ_TENSORS = ("qweight", "qzeros", "scales", "g_idx")
# output columns reordered at a time by `reorder_rows`: its int64 intermediates of [in, columns] stay
# small beside the weights already on the GPU (Qwen3-32B down: 0.2 GB each)
_REORDER_COLUMNS = 1024


def pack_sequential(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Integers in 0..2^bits-1 -> int32, 32/bits consecutive values along `dim` per word, first lowest."""
    per_word = 32 // bits
    moved = values.to(torch.int64).movedim(dim, -1).unflatten(-1, (-1, per_word))
    words = (moved << (torch.arange(per_word, device=values.device) * bits)).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).movedim(-1, dim).contiguous()


def unpack_sequential(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """The inverse of `pack_sequential`: int32 words -> int32 values, 32/bits per word along `dim`."""
    per_word = 32 // bits
    shifts = (torch.arange(per_word, device=packed.device) * bits).to(torch.int32)
    values = (packed.movedim(dim, -1).unsqueeze(-1) >> shifts) & (2**bits - 1)
    return values.flatten(-2).movedim(-1, dim)


def reorder_rows(qweight: torch.Tensor, order: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ words [in * bits / 32, out] holding input rows `order` (a permutation), in that order."""
    parts = [
        pack_sequential(
            unpack_sequential(qweight[:, start : start + _REORDER_COLUMNS], bits, 0)[order], bits, 0
        )
        for start in range(0, qweight.shape[1], _REORDER_COLUMNS)
    ]
    return torch.cat(parts, dim=1)


def quantize_gptq(
    weight: torch.Tensor, bits: int, group_size: int, order: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """weight [out, in] float -> GPTQ v1 tensors, symmetric (zero at 2^(bits-1)). `order` (a permutation of
    the input rows, act-order) decides which rows share a group; without it groups are consecutive rows.
    Round-to-nearest: the GPTQ error feedback is a calibration-time method, not a storage format."""
    transposed = weight.float().T  # [in, out]
    rows = transposed.shape[0]
    if group_size == -1:
        group_size = rows
    if order is None:
        order = torch.arange(rows, device=weight.device)
    g_idx = torch.empty_like(order).scatter_(0, order, torch.arange(rows, device=weight.device) // group_size)
    maxq, zero = 2**bits - 1, 2 ** (bits - 1)
    # group k holds rows order[kG:(k+1)G]
    amax = transposed[order].unflatten(0, (-1, group_size)).abs().amax(dim=1)
    scales = (2 * amax / maxq).clamp_min(1e-8)
    quantized = (transposed / scales[g_idx]).round().add(zero).clamp(0, maxq)
    zeros = torch.full_like(scales, zero - 1)
    return {
        "qweight": pack_sequential(quantized, bits, dim=0),
        "qzeros": pack_sequential(zeros, bits, dim=1),
        "scales": scales.to(torch.float16),
        "g_idx": g_idx.to(torch.int32),
    }


def dequantize_gptq(tensors: dict[str, torch.Tensor], bits: int, zero_offset: int = 1) -> torch.Tensor:
    """The float32 weight [in, out] that GPTQ-layout tensors stand for, the stored zero points plus
    `zero_offset` (1: GPTQ v1 stores them minus one)."""
    g_idx = tensors["g_idx"].long()
    values = unpack_sequential(tensors["qweight"], bits, dim=0).float()
    zeros = unpack_sequential(tensors["qzeros"], bits, dim=1).float() + zero_offset
    return (values - zeros[g_idx]) * tensors["scales"].float()[g_idx]


class GptqMethod(QuantMethod):
    #: added to the stored zero points (GPTQ v1 stores zero - 1)
    zero_offset = 1
    format_name = "GPTQ"

    def __init__(self, bits: int, group_size: int, checkpoint_is_gptq: bool, act_order: bool = False) -> None:
        """`act_order`: the checkpoint's `g_idx` puts the groups out of row order (`desc_act`, without
        `static_groups`, groups smaller than the input); `after_loading` settles it from the loaded
        `g_idx`."""
        self.bits, self.group_size, self.act_order = bits, group_size, act_order
        self.checkpoint_tensors = GPTQ_TENSORS if checkpoint_is_gptq else ("weight",)

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        inp, out, per_word = layer.in_features, layer.out_features, 32 // self.bits
        group = self.group_size if self.group_size > 0 else inp  # -1: one group over all input rows
        if inp % group or inp % per_word or any(size % per_word for size in layer.out_shards):
            raise ValueError(
                f"{self.format_name} group_size {self.group_size}, {self.bits} bits: input size {inp} "
                f"must be a multiple of the group and of {per_word}, output shards {list(layer.out_shards)} "
                f"of {per_word}"
            )
        layer.group_size = group
        groups = inp // group
        for name, shape in (("qweight", (inp // per_word, out)), ("qzeros", (groups, out // per_word))):
            setattr(layer, name, nn.Parameter(torch.empty(shape, dtype=torch.int32), requires_grad=False))
        layer.scales = nn.Parameter(torch.empty(groups, out, dtype=torch.float16), requires_grad=False)
        layer.g_idx = nn.Parameter(torch.empty(inp, dtype=torch.int32), requires_grad=False)
        layer.g_idx_loaded = False

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        what = layer.describe(name, shard)
        columns = layer.shard_rows(shard)
        per_word = 32 // self.bits
        packed = slice(None) if shard is None else slice(columns.start // per_word, columns.stop // per_word)
        if name == "weight" and tensor.is_floating_point() and tensor.dtype != torch.float8_e4m3fn:
            for part, value in quantize_gptq(
                tensor.to(layer.qweight.device), self.bits, layer.group_size
            ).items():
                self.load(layer, part, value, shard)
        elif name == "g_idx":
            known = layer.g_idx_loaded and not tensor.is_meta  # check-model loads shapes only
            if known and not torch.equal(layer.g_idx.data, tensor.to(layer.g_idx.device, torch.int32)):
                raise ValueError(f"{what}: fused shards need the same g_idx (act-order) to share one matrix")
            copy_checked(layer.g_idx.data, tensor, what)
            layer.g_idx_loaded = True
        elif name == "qweight" and tensor.dtype == torch.int32:
            copy_checked(layer.qweight.data[:, columns], tensor, what)
        elif name == "qzeros" and tensor.dtype == torch.int32:
            copy_checked(layer.qzeros.data[:, packed], tensor, what)
        elif name == "scales":
            copy_checked(layer.scales.data[:, columns], tensor, what)
        else:
            raise ValueError(f"{what} ({tensor.dtype}) has no place in a GPTQ linear")

    def after_loading(self, layer: QuantLinear) -> None:
        """Groups out of row order (act-order, whatever `desc_act` said): the rows stored in group order,
        `layer.input_order` naming the input feature of each, and the layer then treated as row-ordered
        (`act_order` false). Only where every group holds `group_size` rows, as GPTQ's act-order makes
        them; a `g_idx` with groups of other sizes keeps its order, and `act_order` (the dense route)."""
        if layer.qweight.is_meta:  # check-model loads shapes only
            return
        order = torch.argsort(layer.g_idx.data, stable=True)
        grouped = layer.g_idx.data[order]
        rows = torch.arange(layer.in_features, device=order.device)
        self.act_order = not torch.equal(grouped, (rows // layer.group_size).to(grouped.dtype))
        if not self.act_order and not torch.equal(order, rows):
            layer.qweight.data = reorder_rows(layer.qweight.data, order, self.bits)
            layer.g_idx.data = grouped
            layer.input_order = order.to(torch.int32)

    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        parts = {name: getattr(layer, name) for name in GPTQ_TENSORS}
        y = layer.stored_order(x) @ dequantize_gptq(parts, self.bits, self.zero_offset).to(x.dtype)
        return y if bias is None else y + bias
