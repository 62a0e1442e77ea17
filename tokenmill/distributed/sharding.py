"""Which part of each checkpoint tensor a rank holds, and the checks that a model splits at all.

A dimension made of `units` equal units (attention heads, or single rows) is split into contiguous
runs of units, one run per rank. When there are fewer units than ranks (GQA models with fewer KV
heads than GPUs), each unit is replicated on `size / units` consecutive ranks instead, so the query
heads of a rank still find their KV head on the same rank.

Checkpoint tensors may arrive as lazy safetensors slices (see `models/loader.py`): indexing one reads
only the indexed rows or columns from the file, so a rank never reads the other ranks' weights.
"""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.distributed.group import TensorParallel
from tokenmill.models.config import ModelConfig

CheckpointTensor = Any  # a torch.Tensor, or a safetensors slice (indexable, `get_shape()`)


def rank_units(units: int, rank: int, size: int) -> range:
    """The units (e.g. heads) of `rank` among `units` split over `size` ranks."""
    if units >= size:
        if units % size:
            raise ValueError(f"{units} units do not split evenly over {size} ranks")
        per_rank = units // size
        return range(rank * per_rank, (rank + 1) * per_rank)
    if size % units:
        raise ValueError(f"{units} units cannot be replicated evenly over {size} ranks")
    unit = rank * units // size
    return range(unit, unit + 1)


def rank_rows(total: int, unit: int, tp: TensorParallel) -> slice:
    """The rows (or columns) of `rank` in a dimension of `total` made of units of `unit` rows."""
    units = rank_units(total // unit, tp.rank, tp.size)
    return slice(units.start * unit, units.stop * unit)


def check_splits(config: ModelConfig, size: int) -> None:
    """Raise a ValueError naming `tensor_parallel_size` if the model cannot be split `size` ways."""
    if size == 1:
        return
    problems = []
    if config.num_attention_heads % size:
        problems.append(f"{config.num_attention_heads} attention heads")
    kv = config.num_key_value_heads
    if kv % size and size % kv:
        problems.append(f"{kv} KV heads (neither a multiple nor a divisor of it)")
    if config.intermediate_size % size:
        problems.append(f"intermediate size {config.intermediate_size}")
    if problems:
        raise ValueError(f"tensor_parallel_size={size} does not divide the model's " + ", ".join(problems))


def materialize(tensor: CheckpointTensor) -> torch.Tensor:
    """The whole tensor (read now if it is a lazy slice)."""
    return tensor if isinstance(tensor, torch.Tensor) else tensor[:]


def float_part(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """Sharding splits float tensors only: a packed or block-scaled tensor's split follows its format."""
    if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"{what} is {tensor.dtype}: tensor parallelism loads float checkpoints (quantizing them at "
            "load with --quantization works); pre-quantized checkpoints need tensor_parallel_size=1"
        )
    return tensor


def checkpoint_part(module: object, tensor: CheckpointTensor) -> torch.Tensor:
    """This rank's part of a checkpoint tensor of `module`'s: its slice if it holds one, else all."""
    if hasattr(module, "checkpoint_part"):
        return module.checkpoint_part(tensor)
    return materialize(tensor)


def checkpoint_shape(module: object, param: torch.Tensor) -> tuple[int, ...]:
    """The checkpoint shape of `param` of `module`: the whole tensor's, of which it may hold a part."""
    if hasattr(module, "checkpoint_shape"):
        return module.checkpoint_shape()
    return tuple(param.shape)
