"""Each rank's record of the collectives it issued, so ranks that went out of step fail by name
instead of waiting for ever.

Every collective of a tensor-parallel group counts itself and folds (operation, shape, dtype) into a
running signature. Rank 0 puts its count and signature in each step's control message; a worker
compares them with its own before it runs the step and stops with both sides' figures if they
differ: a collective issued on one rank only (or with another shape) would otherwise hang NCCL.
The check costs a CRC per eagerly issued collective; replayed CUDA graphs issue theirs without Python.

With TOKENMILL_TRACE_COLLECTIVES=1 each collective and control message is also logged with the rank
and its sequence number, so the logs of one run show where the ranks parted.
"""

from __future__ import annotations

import functools
import logging
import os
import zlib
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

TRACE_ENV = "TOKENMILL_TRACE_COLLECTIVES"

Mark = tuple[int, int]  # (collectives issued, their signature)


class RanksDivergedError(RuntimeError):
    """A worker reached a step having issued other collectives than rank 0: the ranks' code paths differ."""


def tracing() -> bool:
    return os.environ.get(TRACE_ENV) == "1"


@dataclass(eq=False)
class CollectiveLog:
    count: int = 0
    signature: int = 0
    trace: bool = field(default_factory=tracing)

    def record(self, rank: int, op: str, tensor: torch.Tensor) -> None:
        self.count += 1
        key = _key(op, tensor.shape, tensor.dtype)
        self.signature = zlib.crc32(key, self.signature)
        if self.trace:
            where = _captured(tensor)
            logger.info("rank %d collective #%d %s%s", rank, self.count, key.decode(), where)

    def mark(self) -> Mark:
        return self.count, self.signature

    def check(self, rank: int, step: int, first: Mark) -> None:
        """Raise if rank 0 (`first`) had issued other collectives than this rank before `step`."""
        if self.trace:
            here = self.mark()
            logger.info("rank %d step #%d received: collectives %s, rank 0's %s", rank, step, here, first)
        if self.mark() != first:
            raise RanksDivergedError(
                f"before step {step}, rank {rank} had issued {self.count} collectives (signature "
                f"{self.signature:08x}) and rank 0 {first[0]} (signature {first[1]:08x}): the ranks ran "
                f"different code; rerun with {TRACE_ENV}=1 to log each collective of every rank"
            )


@functools.lru_cache(maxsize=1024)  # a step issues the same few shapes every time
def _key(op: str, shape: torch.Size, dtype: torch.dtype) -> bytes:
    """What a collective's signature folds in. CRC over it, not hash(): str hashes are salted per
    process, and the ranks are separate processes."""
    return f"{op} {tuple(shape)} {dtype}".encode()


def _captured(tensor: torch.Tensor) -> str:
    if tensor.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return " (captured in a CUDA graph)"
    return ""
