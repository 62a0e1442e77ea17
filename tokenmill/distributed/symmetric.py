"""All-reduce of small activations through symmetric memory, for tensor parallelism on one host.

A decode step all-reduces a few kilobytes twice per layer; NCCL's ring/tree protocols spend ~10 µs on
each, which at TP=2 is a sixth of an 8B model's step. With every rank's buffer mapped into every other
rank's address space (PyTorch's symmetric memory, over NVLink or PCIe peer access) one kernel does the
whole all-reduce, capturable in CUDA graphs:
- up to `ONE_WAY_MAX_BYTES`, the one-way kernel of `kernels/triton/all_reduce.py` (each word travels
  with its own arrival flag: one hop, no barrier), where Triton is installed;
- up to `MAX_BYTES`, PyTorch's one-shot kernel (copy in, barrier, sum every peer's copy);
- larger tensors (prefill) keep using NCCL's bandwidth-optimal algorithms.

Multicast (NVLink SHARP) is never used: only peer-to-peer loads and stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# One-shot reads every peer's whole copy: past a few MiB, NCCL's bandwidth-optimal algorithms win.
MAX_BYTES = 4 << 20
# The one-way kernel sends twice the data (a flag per word); past this, the one-shot kernel's
# barriers cost less than the doubled transfer.
ONE_WAY_MAX_BYTES = 1 << 20

DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # activations, and LoRA's float32 shrink sums
ALIGNMENT = 16  # bytes: Triton compiles the one-way kernel for data this aligned (another is a new variant)


@dataclass(frozen=True)
class OneWaySlots:
    """This rank's receive slots for the one-way kernel, every rank's slot address, the kernel's
    per-program epoch counters, and an aligned buffer for the views that start off ALIGNMENT."""

    slots: torch.Tensor
    peer_slots: torch.Tensor
    epochs: torch.Tensor
    staging: torch.Tensor
    rank: int
    world: int
    launch: Callable[..., None]  # kernels.triton.all_reduce.all_reduce (imported only where Triton is)

    @classmethod
    def create(cls, group: dist.ProcessGroup, device: torch.device) -> OneWaySlots:
        from tokenmill.kernels.triton.all_reduce import MAX_PROGRAMS, all_reduce

        world, rank = group.size(), group.rank()
        words = 2 * world * (ONE_WAY_MAX_BYTES // 4)
        # Zeroed on this rank's stream before any peer can store into them: the peers' first stores
        # come after the group's next collective (`init_tensor_parallel`'s agreement), in stream order.
        slots, handle = _mapped_zeros(words, torch.uint64, device, group)
        offset = slots.data_ptr() - handle.buffer_ptrs[rank]
        addresses = [ptr + offset for ptr in handle.buffer_ptrs]
        peer_slots = torch.tensor(addresses, dtype=torch.int64, device=device)
        epochs = torch.zeros(MAX_PROGRAMS, dtype=torch.int32, device=device)
        staging = torch.empty(ONE_WAY_MAX_BYTES, dtype=torch.uint8, device=device)
        return cls(slots, peer_slots, epochs, staging, rank, world, all_reduce)

    def all_reduce(self, x: torch.Tensor) -> None:
        """Sum contiguous `x` (whole 32-bit words, at most ONE_WAY_MAX_BYTES) in place. A view that
        starts off ALIGNMENT goes through the staging buffer, a copy on this rank alone: the ranks'
        addresses may differ, so where the data sits must not change which kernel a rank runs."""
        if x.data_ptr() % ALIGNMENT == 0:
            self.launch(x, self.slots, self.peer_slots, self.epochs, self.rank, self.world)
            return
        staged = self.staging[: x.numel() * x.element_size()].view(x.dtype).view(x.shape)
        staged.copy_(x)
        self.launch(staged, self.slots, self.peer_slots, self.epochs, self.rank, self.world)
        x.copy_(staged)


def _mapped_zeros(
    numel: int, dtype: torch.dtype, device: torch.device, group: dist.ProcessGroup
) -> tuple[torch.Tensor, Any]:
    """A zeroed symmetric tensor that every rank of `group` maps (a collective), and its handle."""
    import torch.distributed._symmetric_memory as symmetric_memory

    tensor = symmetric_memory.empty(numel, dtype=dtype, device=device).zero_()
    return tensor, symmetric_memory.rendezvous(tensor, group.group_name)


class SymmetricAllReduce:
    def __init__(
        self, buffers: dict[torch.dtype, torch.Tensor], group_name: str, one_way: OneWaySlots | None
    ) -> None:
        self._buffers = buffers
        self._group_name = group_name
        self._one_way = one_way

    @classmethod
    def create(cls, group: dist.ProcessGroup, device: torch.device) -> SymmetricAllReduce | None:
        """The all-reduce for `group` if this rank can map its peers' buffers, else None. The caller
        makes the ranks agree: a collective taken by one rank and not another would hang (so the
        one-way kernel is used where Triton is, which every rank of one host shares)."""
        try:
            torch.ops.symm_mem.one_shot_all_reduce_copy_out  # noqa: B018 (older PyTorch lacks it)
            buffers = {}
            for dtype in DTYPES:
                buffers[dtype], _ = _mapped_zeros(MAX_BYTES // dtype.itemsize, dtype, device, group)
        except (ImportError, AttributeError, RuntimeError) as exc:
            logger.info("symmetric-memory all-reduce unavailable, NCCL for all: %s", exc)
            return None
        try:
            one_way = OneWaySlots.create(group, device)
        except (ImportError, RuntimeError) as exc:
            logger.info("no one-way all-reduce (PyTorch's one-shot kernel for all): %s", exc)
            one_way = None
        return cls(buffers, group.group_name, one_way)

    @property
    def paths(self) -> int:
        """1 with PyTorch's one-shot kernel alone, 2 with the one-way kernel too (ranks must agree)."""
        return 2 if self._one_way is not None else 1

    def without_one_way(self) -> SymmetricAllReduce:
        return SymmetricAllReduce(self._buffers, self._group_name, None)

    def handles(self, x: torch.Tensor) -> bool:
        """Whether `x` goes through this all-reduce (decided by its shape and dtype alone, so every rank
        decides alike)."""
        return x.dtype in self._buffers and x.is_contiguous() and x.numel() * x.element_size() <= MAX_BYTES

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the group, in place."""
        size = x.numel() * x.element_size()
        if self._one_way is not None and size <= ONE_WAY_MAX_BYTES and size % 4 == 0:
            self._one_way.all_reduce(x)
            return x
        flat = x.view(-1)
        staging = self._buffers[x.dtype][: flat.numel()]
        torch.ops.symm_mem.one_shot_all_reduce_copy_out(staging, flat, "sum", self._group_name, flat)
        return x
