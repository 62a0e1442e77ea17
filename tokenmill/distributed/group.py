"""One rank's view of its tensor-parallel group: who it is, and the four collectives the model needs.

Every rank of a group runs the same model code; layers call these methods, which do nothing when the
group has one rank, so the single-GPU path pays no collective and needs no `torch.distributed` set-up.
Rank 0 is the engine process (scheduler and sampler); the others are workers (`worker.py`). Each
collective is recorded in the rank's `CollectiveLog`, which the control channel uses to catch ranks
that went out of step.

Only collectives run here, no point-to-point operation: logits are all-gathered rather than gathered
to rank 0, since NCCL's gather is a set of sends and receives that need connections of their own,
set up lazily at the first step, which the collectives (warmed and captured at start-up) never use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from tokenmill.distributed.symmetric import MAX_BYTES, SymmetricAllReduce
from tokenmill.distributed.trace import CollectiveLog

# torch >= 2.13 names it all_gather_single (the old name warns); the GPU images may be older.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

WARM_UP_ELEMENTS = (256, 1 << 20)  # NCCL's low-latency protocols, then its bulk one

logger = logging.getLogger(__name__)

# Start-up (loading a checkpoint, capturing graphs) happens between collectives, but every rank does
# it at once: the wait is the difference between the ranks, not the whole.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True, eq=False)
class TensorParallel:
    rank: int
    size: int
    group: dist.ProcessGroup | None = None  # None for a single rank
    symmetric: SymmetricAllReduce | None = None  # small all-reduces on CUDA, where the GPUs allow it
    log: CollectiveLog = field(default_factory=CollectiveLog)

    @property
    def is_first(self) -> bool:
        """The rank that samples: logits are gathered here."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks, in place."""
        if self.size == 1:
            return x
        self.log.record(self.rank, "all_reduce", x)
        if self.symmetric is not None and self.symmetric.handles(x):
            return self.symmetric.all_reduce(x)
        dist.all_reduce(x, group=self.group)
        return x

    def gather_last_dim(self, x: torch.Tensor) -> torch.Tensor | None:
        """Every rank's `x` concatenated along the last dimension, on rank 0; None on the others."""
        if self.size == 1:
            return x
        x = x.contiguous()
        parts = x.new_empty((self.size * x.shape[0], *x.shape[1:]))  # the ranks' x, stacked on dim 0
        self.log.record(self.rank, "all_gather", x)
        _all_gather_single(parts, x, group=self.group)
        if not self.is_first:
            return None
        return parts.view(self.size, *x.shape).movedim(0, -2).flatten(-2)

    def broadcast_from_first(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's `x` on every rank, in place (the other ranks pass a tensor of the same shape)."""
        if self.size > 1:
            self.log.record(self.rank, "broadcast", x)
            dist.broadcast(x, src=self._global(0), group=self.group)
        return x

    def minimum(self, value: int, device: torch.device) -> int:
        """The smallest `value` over the ranks (so every rank sizes its KV cache the same)."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        self.log.record(self.rank, "all_reduce_min", tensor)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.group)
        return int(tensor.item())

    def warm_up(self, device: torch.device, dtype: torch.dtype) -> None:
        """Issue each collective of a step once, eagerly, small and large: NCCL sets up a kind of
        connection (and its buffers) at its first use, and a Triton all-reduce compiles at its first,
        which should then be neither a CUDA graph capture nor a request's step, and should come before
        the KV cache takes the free memory."""
        if self.size == 1:
            return
        for numel in WARM_UP_ELEMENTS:
            x = torch.zeros(1, numel, dtype=dtype, device=device)
            self.all_reduce(x)
            self.gather_last_dim(x)
            self.broadcast_from_first(x[0].long())
        if dtype != torch.float32:  # LoRA's shrink sums are all-reduced in float32: compile that kernel too
            self.all_reduce(torch.zeros(1, WARM_UP_ELEMENTS[0], dtype=torch.float32, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def _global(self, group_rank: int) -> int:
        return dist.get_global_rank(self.group, group_rank) if self.group is not None else group_rank


SINGLE_RANK = TensorParallel(rank=0, size=1)


def init_tensor_parallel(
    rank: int,
    size: int,
    port: int,
    device: torch.device,
    timeout: timedelta = COLLECTIVE_TIMEOUT,
    symmetric: bool = True,
) -> TensorParallel:
    """Join the group rendezvousing on 127.0.0.1:`port` (all ranks are on this host): NCCL on CUDA,
    gloo on CPU. Blocks until every rank has joined. A collective that waits longer than `timeout`
    fails the process (NCCL's watchdog aborts it) instead of hanging. `symmetric`: small all-reduces
    through symmetric memory on CUDA when every rank can map its peers' memory."""
    if size == 1:
        return SINGLE_RANK
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # on a timeout: abort, tear down
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=size,
        timeout=timeout,
        device_id=device if device.type == "cuda" else None,
    )
    tp = TensorParallel(rank=rank, size=size, group=dist.group.WORLD)
    if not symmetric or device.type != "cuda":
        return tp
    fast = SymmetricAllReduce.create(tp.group, device)
    paths = tp.minimum(fast.paths if fast is not None else 0, device)  # every rank alike, or they hang
    if fast is None or paths == 0:
        logger.info("NCCL for every all-reduce: a rank cannot map its peers' memory")
        return tp
    if paths < fast.paths:
        fast = fast.without_one_way()
    logger.info("small all-reduces through symmetric memory (%d kernels, up to %d bytes)", paths, MAX_BYTES)
    return dataclasses.replace(tp, symmetric=fast)


def destroy_tensor_parallel() -> None:
    """Leave the group, so this process can start another tensor-parallel engine later (one at a time:
    the group is the process's default one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
