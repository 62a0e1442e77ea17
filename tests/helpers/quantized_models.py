"""Quantized copies of the tiny checkpoints, written in the exact on-disk layout of each format."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tokenmill.quantization.awq import quantize_awq
from tokenmill.quantization.fp8 import quantize_fp8_blocks
from tokenmill.quantization.gptq import quantize_gptq

# The projections a quantized checkpoint stores quantized (embeddings, norms and lm_head stay float).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def save_fp8_checkpoint(
    source: Path, directory: Path, block: tuple[int, int], not_convert: Sequence[str] = ()
) -> Path:
    """`source` (a float HF checkpoint) as an FP8 block-wise checkpoint: each projection's `weight` in
    float8_e4m3fn plus `weight_scale_inv`, and config.json's `quantization_config` saying so."""
    config = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": list(block),
    }

    def fp8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
        quantized, scale_inv = quantize_fp8_blocks(weight, block)
        return {"weight": quantized, "weight_scale_inv": scale_inv}

    return _save_quantized(source, directory, config, fp8, not_convert)


def save_awq_checkpoint(source: Path, directory: Path, group_size: int) -> Path:
    """`source` as an AutoAWQ GEMM checkpoint: `qweight`, `qzeros`, `scales` for each projection."""
    config = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
    }

    def awq(weight: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(("qweight", "qzeros", "scales"), quantize_awq(weight, group_size)))

    return _save_quantized(source, directory, config, awq, ())


def save_gptq_checkpoint(source: Path, directory: Path, bits: int, group_size: int, act_order: bool) -> Path:
    """`source` as a GPTQ v1 checkpoint: `qweight`, `qzeros`, `scales`, `g_idx` for each projection
    (`gptq_tensors`), config.json's `desc_act` saying whether the groups follow act-order."""
    config = {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": act_order,
        "sym": True,
        "checkpoint_format": "gptq",
    }

    def gptq(weight: torch.Tensor) -> dict[str, torch.Tensor]:
        return gptq_tensors(weight, bits, group_size, act_order)

    return _save_quantized(source, directory, config, gptq, ())


def gptq_tensors(
    weight: torch.Tensor, bits: int, group_size: int, act_order: bool
) -> dict[str, torch.Tensor]:
    """A GPTQ checkpoint's tensors of `weight` [out, in]; with `act_order`, the groups follow a permutation
    of the input rows fixed by the input size (as real act-order is fixed by the layer input, which q/k/v
    and gate/up share), every group `group_size` rows."""
    rows = weight.shape[1]
    generator = torch.Generator().manual_seed(rows)  # on the CPU, whatever the default device
    order = torch.randperm(rows, generator=generator, device="cpu").to(weight.device) if act_order else None
    return quantize_gptq(weight, bits, group_size, order)


def _save_quantized(
    source: Path,
    directory: Path,
    quantization_config: dict,
    quantize: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    not_convert: Sequence[str],
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, directory / file.name)
    for file in source.glob("*.safetensors"):
        tensors = {}
        for name, tensor in load_file(file).items():
            module = name.removesuffix(".weight")
            skipped = any(f".{entry}." in f".{module}." for entry in not_convert)
            if name.endswith(".weight") and module.rsplit(".", 1)[-1] in PROJECTIONS and not skipped:
                tensors.update({f"{module}.{part}": value for part, value in quantize(tensor).items()})
            else:
                tensors[name] = tensor
        save_file(tensors, directory / file.name)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {**quantization_config, "modules_to_not_convert": list(not_convert)}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
