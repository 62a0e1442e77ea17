"""PEFT LoRA adapter directories: read, validated, and held on the host until a slot takes them.

An adapter directory holds `adapter_config.json` and `adapter_model.safetensors` as `peft` writes them
(`save_pretrained`). Only what tokenmill applies exactly is accepted: plain LoRA on the seven decoder
projections, one rank and alpha for all of them. Anything else (DoRA, `modules_to_save`, per-module rank
patterns, embeddings or the LM head as targets) is refused with a message naming the field, because
silently serving a different model than the one the user trained is worse than refusing it.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from tokenmill.models.loader import read_json_object

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

#: checkpoint projection name -> (fused tokenmill module under a decoder layer, shard index in it)
TARGET_MODULES: dict[str, tuple[str, int]] = {
    "q_proj": ("self_attn.qkv_proj", 0),
    "k_proj": ("self_attn.qkv_proj", 1),
    "v_proj": ("self_attn.qkv_proj", 2),
    "o_proj": ("self_attn.o_proj", 0),
    "gate_proj": ("mlp.gate_up_proj", 0),
    "up_proj": ("mlp.gate_up_proj", 1),
    "down_proj": ("mlp.down_proj", 0),
}

_TENSOR_NAME = re.compile(
    r"(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight"
)
_uids = itertools.count(1)

# (layer index, checkpoint projection name) -> (A [rank, in], B [out, rank])
AdapterWeights = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LoRARequest:
    """Which adapter a request runs under: a name, and the PEFT directory it is loaded from the first
    time that name is seen."""

    name: str
    path: str


@dataclass(frozen=True, eq=False)
class LoRAAdapter:
    """A validated adapter on the host. `uid` is unique per load, so a name unloaded and loaded again
    from another directory never shares prefix-cache blocks with its previous self."""

    name: str
    path: Path
    rank: int
    scaling: float
    weights: AdapterWeights
    uid: int


def read_adapter(name: str, path: str | Path, max_rank: int) -> LoRAAdapter:
    """Read and validate the PEFT adapter directory `path`; raises ValueError or FileNotFoundError
    whose message names the file and the field."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"LoRA adapter {name!r}: {directory} is not a directory")
    config_file, weights_file = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"LoRA adapter {name!r}: {directory} has no {CONFIG_FILE}")
    if not weights_file.is_file():
        pickled = (
            " (adapter_model.bin is never loaded: pickles can run code)"
            if any(directory.glob("*.bin"))
            else ""
        )
        raise FileNotFoundError(f"LoRA adapter {name!r}: {directory} has no {WEIGHTS_FILE}{pickled}")
    config = read_json_object(config_file)
    rank, scaling = _check_config(config, config_file, max_rank)
    weights = _read_weights(weights_file, rank)
    return LoRAAdapter(name, directory, rank, scaling, weights, next(_uids))


def _check_config(config: dict, where: Path, max_rank: int) -> tuple[int, float]:
    """The rank and the scale of B·A, after refusing every option tokenmill does not apply."""
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{where}: peft_type is {config['peft_type']!r}; only LORA adapters are supported")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"{where}: r must be a positive integer, got {rank!r}")
    if rank > max_rank:
        raise ValueError(f"{where}: r is {rank}, above max_lora_rank {max_rank} (raise --max-lora-rank)")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise ValueError(f"{where}: lora_alpha must be a number, got {alpha!r}")
    refused = {
        "modules_to_save": "fully trained copies of modules are not supported; merge the adapter instead",
        "rank_pattern": "per-module ranks are not supported",
        "alpha_pattern": "per-module alphas are not supported",
        "use_dora": "DoRA is not supported",
        "lora_bias": "LoRA biases are not supported",
        "target_parameters": "LoRA on raw parameters is not supported",
        "fan_in_fan_out": "fan_in_fan_out (Conv1D layouts) is not supported",
        "layer_replication": "layer replication is not supported",
    }
    for field, reason in refused.items():
        if config.get(field):
            raise ValueError(f"{where}: {field} is set ({reason})")
    if config.get("bias", "none") != "none":
        raise ValueError(f"{where}: bias is {config['bias']!r}; only 'none' is supported")
    targets = config.get("target_modules")
    if isinstance(targets, list):
        unknown = sorted(set(targets) - set(TARGET_MODULES))
        if unknown:
            raise ValueError(
                f"{where}: target_modules {unknown} are not supported "
                f"(supported: {', '.join(TARGET_MODULES)})"
            )
    elif not isinstance(targets, str):
        raise ValueError(f"{where}: target_modules must be a list of module names or a string")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return rank, float(scaling)


def _read_weights(path: Path, rank: int) -> AdapterWeights:
    """The A and B of every adapted projection, with their shapes checked against the rank."""
    try:
        halves = _read_halves(path)
    except SafetensorError as exc:  # a truncated, corrupt or foreign file: the caller's file, not a bug
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    if not halves:
        raise ValueError(f"{path}: holds no LoRA tensors")
    weights: AdapterWeights = {}
    for layer, module in sorted({(layer, module) for layer, module, _ in halves}):
        a, b = halves.get((layer, module, "A")), halves.get((layer, module, "B"))
        where = f"{path}: layers.{layer}.{module}"
        if a is None or b is None:
            raise ValueError(f"{where} has lora_{'A' if a is None else 'B'} missing")
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise ValueError(
                f"{where}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not have rank r={rank}"
            )
        weights[(layer, module)] = (a, b)
    return weights


def _read_halves(path: Path) -> dict[tuple[int, str, str], torch.Tensor]:
    """Every tensor of the file by (layer, module, A or B), refusing any other tensor by name."""
    halves: dict[tuple[int, str, str], torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            match = _TENSOR_NAME.fullmatch(key)
            if match is None or match.group(2) not in TARGET_MODULES:
                raise ValueError(
                    f"{path}: tensor {key!r} is not the LoRA A or B of a supported projection "
                    f"({', '.join(TARGET_MODULES)}); embeddings, the LM head and other modules are not "
                    "supported"
                )
            halves[(int(match.group(1)), match.group(2), match.group(3))] = handle.get_tensor(key)
    return halves
