"""All-reduce of small activations through symmetric memory, for tensor parallelism on one host.

A decode step all-reduces a few kilobytes twice per layer; NCCL's ring/tree protocols spend ~10 µs on
each, which at TP=2 is a sixth of an 8B model's step. With every rank's buffer mapped into every other
rank's address space (PyTorch's symmetric memory, over NVLink or PCIe peer access), one kernel copies the
local input into its buffer, waits on the peers, and sums all the buffers straight into the output: one
launch and one hop, and capturable in CUDA graphs. Larger tensors (prefill) keep using NCCL.

Multicast (NVLink SHARP) is never used: only the peer-to-peer one-shot kernel.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# One-shot reads every peer's whole copy: past a few MiB, NCCL's bandwidth-optimal algorithms win.
MAX_BYTES = 4 << 20


DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # activations, and LoRA's float32 shrink sums


class SymmetricAllReduce:
    def __init__(self, buffers: dict[torch.dtype, torch.Tensor], group_name: str) -> None:
        self._buffers = buffers
        self._group_name = group_name

    @classmethod
    def create(cls, group: dist.ProcessGroup, device: torch.device) -> SymmetricAllReduce | None:
        """The all-reduce for `group` if this rank can map its peers' buffers, else None. The caller
        makes the ranks agree: a collective taken by one rank and not another would hang."""
        try:
            import torch.distributed._symmetric_memory as symmetric_memory

            torch.ops.symm_mem.one_shot_all_reduce_copy_out  # noqa: B018 (older PyTorch lacks it)
            buffers = {}
            for dtype in DTYPES:
                buffers[dtype] = symmetric_memory.empty(
                    MAX_BYTES // dtype.itemsize, dtype=dtype, device=device
                )
                symmetric_memory.rendezvous(buffers[dtype], group.group_name)
        except (ImportError, AttributeError, RuntimeError) as exc:
            logger.info("symmetric-memory all-reduce unavailable, NCCL for all: %s", exc)
            return None
        return cls(buffers, group.group_name)

    def handles(self, x: torch.Tensor) -> bool:
        """Whether `x` goes through this all-reduce (decided by its shape and dtype alone, so every rank
        decides alike)."""
        return x.dtype in self._buffers and x.is_contiguous() and x.numel() * x.element_size() <= MAX_BYTES

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the group, in place."""
        flat = x.view(-1)
        staging = self._buffers[x.dtype][: flat.numel()]
        torch.ops.symm_mem.one_shot_all_reduce_copy_out(staging, flat, "sum", self._group_name, flat)
        return x
