"""Which quantization a model loads with: from config.json's `quantization_config` and/or the
`--quantization` flag, checked here once so that an unsupported checkpoint fails before any weight is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.base import QuantMethod, UnquantizedMethod
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

QUANTIZATION_CHOICES = ("fp8", "int8", "awq", "gptq")
DEFAULT_GROUP_SIZE = 128
_READ_FROM_CHECKPOINTS = ("fp8", "awq", "gptq")
_PLANNED = ("compressed-tensors", "awq_marlin", "gptq_marlin")


@dataclass(frozen=True)
class QuantizationConfig:
    method: str  # one of QUANTIZATION_CHOICES
    checkpoint_quantized: bool  # False: float weights quantized while loading
    weight_block_size: tuple[int, int] | None = None  # fp8 checkpoints (quantized at load: per channel)
    group_size: int | None = None  # awq, gptq (-1: one group)
    bits: int = 4  # gptq
    act_order: bool = False  # gptq: desc_act, groups out of row order (no static_groups, not one group)
    modules_to_not_convert: tuple[str, ...] = ()

    def method_for(self, checkpoint_modules: Sequence[str]) -> QuantMethod:
        """The method of a linear made of `checkpoint_modules` (its fused shards' Hugging Face names)."""
        skipped = [self._not_converted(name) for name in checkpoint_modules]
        if all(skipped):
            return UnquantizedMethod()
        if any(skipped):
            raise ValueError(
                "quantization_config.modules_to_not_convert lists only some of the fused "
                f"{list(checkpoint_modules)}"
            )
        if self.method == "int8":
            return Int8WeightOnlyMethod()
        if self.method == "fp8" and not self.checkpoint_quantized:
            return Fp8ChannelMethod()
        if self.method == "fp8" and self.weight_block_size is not None:
            return Fp8BlockMethod(self.weight_block_size, self.checkpoint_quantized)
        if self.method == "awq" and self.group_size is not None:
            return AwqMethod(self.group_size, self.checkpoint_quantized)
        if self.method == "gptq" and self.group_size is not None:
            return GptqMethod(self.bits, self.group_size, self.checkpoint_quantized, self.act_order)
        raise AssertionError(f"incomplete quantization config {self}")

    def _not_converted(self, module: str) -> bool:
        return any(f".{entry}." in f".{module}." for entry in self.modules_to_not_convert)


def resolve_quantization(
    requested: str | None, checkpoint: dict[str, Any] | None, source: str
) -> QuantizationConfig | None:
    """`requested` is the --quantization flag, `checkpoint` config.json's `quantization_config` (read from
    `source`, named in every error). A quantized checkpoint must be read as what it is."""
    if checkpoint is None:
        if requested is None:
            return None
        if requested not in QUANTIZATION_CHOICES:
            raise ValueError(
                f"quantization {requested!r} is not supported (supported: {QUANTIZATION_CHOICES})"
            )
        group = DEFAULT_GROUP_SIZE if requested in ("awq", "gptq") else None  # gptq: 4-bit, no act-order
        return QuantizationConfig(requested, False, group_size=group)
    field = f"{source}: quantization_config"
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{field} must be an object")
    kind = checkpoint.get("quant_method")
    if kind in _PLANNED:
        raise ValueError(f"{field}.quant_method {kind!r} is not supported yet (issue 12)")
    if kind not in _READ_FROM_CHECKPOINTS:
        raise ValueError(
            f"{field}.quant_method {kind!r} is not supported (supported: {', '.join(_READ_FROM_CHECKPOINTS)})"
        )
    if requested not in (None, kind):
        raise ValueError(f"{source} holds a {kind} checkpoint: --quantization {requested} cannot apply to it")
    skip = checkpoint.get("modules_to_not_convert") or []
    if not (isinstance(skip, list) and all(isinstance(name, str) for name in skip)):
        raise ValueError(f"{field}.modules_to_not_convert must be a list of module names, got {skip!r}")
    read = {"fp8": _fp8_checkpoint, "awq": _awq_checkpoint, "gptq": _gptq_checkpoint}[kind]
    return replace(read(checkpoint, field), modules_to_not_convert=tuple(skip))


def _fp8_checkpoint(checkpoint: dict[str, Any], field: str) -> QuantizationConfig:
    if checkpoint.get("fmt", "e4m3") != "e4m3":
        raise ValueError(f"{field}.fmt {checkpoint['fmt']!r} is not supported (only e4m3)")
    if checkpoint.get("activation_scheme", "dynamic") != "dynamic":
        raise ValueError(
            f"{field}.activation_scheme {checkpoint['activation_scheme']!r}: only dynamic is supported"
        )
    block = checkpoint.get("weight_block_size")
    if block is None:
        raise ValueError(
            f"{field}.weight_block_size is missing: per-tensor FP8 checkpoints are not supported yet"
        )
    if not (isinstance(block, list) and len(block) == 2 and all(type(b) is int and b > 0 for b in block)):
        raise ValueError(f"{field}.weight_block_size must be two positive integers, got {block!r}")
    return QuantizationConfig("fp8", True, weight_block_size=(block[0], block[1]))


def _awq_checkpoint(checkpoint: dict[str, Any], field: str) -> QuantizationConfig:
    """AutoAWQ's GEMM layout, 4-bit with zero points (what Qwen's *-AWQ checkpoints ship)."""
    expected = {"bits": 4, "zero_point": True, "version": "gemm"}
    for key, value in expected.items():
        found = checkpoint.get(key, "gemm" if key == "version" else None)
        if (found.lower() if isinstance(found, str) else found) != value:
            raise ValueError(f"{field}.{key} {found!r} is not supported (only {value!r})")
    group = checkpoint.get("group_size")
    if type(group) is not int or group <= 0:
        raise ValueError(f"{field}.group_size must be a positive integer, got {group!r}")
    return QuantizationConfig("awq", True, group_size=group)


def _gptq_checkpoint(checkpoint: dict[str, Any], field: str) -> QuantizationConfig:
    """GPTQ v1 tensors (AutoGPTQ / GPTQModel, what Qwen's *-GPTQ-Int4/Int8 ship), act-order or not."""
    bits, group = checkpoint.get("bits"), checkpoint.get("group_size")
    if bits not in (4, 8):
        raise ValueError(f"{field}.bits {bits!r} is not supported (only 4 or 8)")
    if type(group) is not int or not (group > 0 or group == -1):
        raise ValueError(f"{field}.group_size must be a positive integer or -1, got {group!r}")
    layout = checkpoint.get("checkpoint_format", "gptq")
    if layout != "gptq":
        raise ValueError(f"{field}.checkpoint_format {layout!r} is not supported (only 'gptq')")
    desc_act, static_groups = checkpoint.get("desc_act", False), checkpoint.get("static_groups", False)
    for name, value in (("desc_act", desc_act), ("static_groups", static_groups)):
        if not isinstance(value, bool):
            raise ValueError(f"{field}.{name} must be true or false")
    # static groups are fixed before act-order reorders the columns, and one group (-1) has no order:
    # either way g_idx keeps the row order
    act_order = desc_act and not static_groups and group != -1
    return QuantizationConfig("gptq", True, group_size=group, bits=bits, act_order=act_order)
