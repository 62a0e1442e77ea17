"""One rank's view of its tensor-parallel group: who it is, and the four collectives the model needs.

Every rank of a group runs the same model code; layers call these methods, which do nothing when the
group has one rank, so the single-GPU path pays no collective and needs no `torch.distributed` set-up.
Rank 0 is the engine process (scheduler and sampler); the others are workers (`worker.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from tokenmill.distributed.symmetric import SymmetricAllReduce

# Generous: start-up (loading a large checkpoint, capturing graphs) happens between collectives.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True, eq=False)
class TensorParallel:
    rank: int
    size: int
    group: dist.ProcessGroup | None = None  # None for a single rank
    symmetric: SymmetricAllReduce | None = None  # small all-reduces on CUDA, where the GPUs allow it

    @property
    def is_first(self) -> bool:
        """The rank that samples: logits are gathered here."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks, in place."""
        if self.symmetric is not None and self.symmetric.handles(x):
            return self.symmetric.all_reduce(x)
        if self.size > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def gather_last_dim(self, x: torch.Tensor) -> torch.Tensor | None:
        """Every rank's `x` concatenated along the last dimension, on rank 0; None on the others."""
        if self.size == 1:
            return x
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)] if self.is_first else None
        dist.gather(x, parts, dst=self._global(0), group=self.group)
        return torch.cat(parts, dim=-1) if parts is not None else None

    def broadcast_from_first(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's `x` on every rank, in place (the other ranks pass a tensor of the same shape)."""
        if self.size > 1:
            dist.broadcast(x, src=self._global(0), group=self.group)
        return x

    def minimum(self, value: int, device: torch.device) -> int:
        """The smallest `value` over the ranks (so every rank sizes its KV cache the same)."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.group)
        return int(tensor.item())

    def _global(self, group_rank: int) -> int:
        return dist.get_global_rank(self.group, group_rank) if self.group is not None else group_rank


SINGLE_RANK = TensorParallel(rank=0, size=1)


def init_tensor_parallel(
    rank: int, size: int, port: int, device: torch.device, symmetric: bool = True
) -> TensorParallel:
    """Join the group rendezvousing on 127.0.0.1:`port` (all ranks are on this host): NCCL on CUDA,
    gloo on CPU. Blocks until every rank has joined. `symmetric`: small all-reduces through symmetric
    memory on CUDA when every rank can map its peers' memory."""
    if size == 1:
        return SINGLE_RANK
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=size,
        timeout=COLLECTIVE_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    group = dist.group.WORLD
    fast = SymmetricAllReduce.create(group, device) if symmetric and device.type == "cuda" else None
    return TensorParallel(rank=rank, size=size, group=group, symmetric=fast)


def destroy_tensor_parallel() -> None:
    """Leave the group, so this process can start another tensor-parallel engine later (one at a time:
    the group is the process's default one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
