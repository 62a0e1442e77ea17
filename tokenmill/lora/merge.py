"""`tokenmill merge-lora BASE ADAPTER OUT`: a checkpoint with a PEFT adapter folded into its weights
(W + scale·B·A), for those who prefer serving one merged model. OUT gets every file of BASE, with the
adapted projections' weights replaced in the safetensors files."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tokenmill.lora.adapter import TARGET_MODULES, LoRAAdapter, read_adapter

MAX_MERGE_RANK = 4096  # merging needs no slots, so any rank a checkpoint can hold is accepted


def merge_lora(base: str | Path, adapter_dir: str | Path, out: str | Path) -> Path:
    """Write BASE with the adapter merged to OUT (a new or empty directory); returns OUT."""
    base, out = Path(base).expanduser(), Path(out).expanduser()
    adapter = read_adapter("merge", adapter_dir, MAX_MERGE_RANK)
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{base} has no *.safetensors weights")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; merge-lora writes a new checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    try:
        _write_merged(base, files, adapter, out)
    except BaseException:
        shutil.rmtree(out)  # no half-merged checkpoint is left behind to be served by mistake
        raise
    return out


def _write_merged(base: Path, files: list[Path], adapter: LoRAAdapter, out: Path) -> None:
    deltas = {
        f"model.layers.{layer}.{TARGET_MODULES[module][0].split('.')[0]}.{module}.weight": pair
        for (layer, module), pair in adapter.weights.items()
    }
    for path in base.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy2(path, out / path.name)
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            metadata = handle.metadata()
        for name in tensors.keys() & deltas.keys():
            tensors[name] = _merged(name, tensors[name], *deltas.pop(name), adapter.scaling)
        save_file(tensors, str(out / file.name), metadata=metadata)
    if deltas:
        raise ValueError(
            f"{base} has no tensor {sorted(deltas)[0]!r} that the adapter adapts (another base model?)"
        )


def _merged(
    name: str, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float
) -> torch.Tensor:
    if not weight.is_floating_point() or weight.element_size() < 2:
        raise ValueError(f"{name} is quantized ({weight.dtype}); merge the adapter into the float checkpoint")
    delta = b.to(torch.float32) @ a.to(torch.float32) * scaling
    if delta.shape != weight.shape:
        raise ValueError(
            f"{name}: the adapter's B·A is {tuple(delta.shape)}, the weight {tuple(weight.shape)}"
        )
    return (weight.to(torch.float32) + delta).to(weight.dtype)
