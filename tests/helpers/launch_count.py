"""Count the kernels a model forward pass would launch on a GPU, on CPU: Triton launches (through the
interpreter, TRITON_INTERPRET=1) by kernel name, and PyTorch operators that compute (not views, not
allocations). Under CUDA graphs every launch costs GPU time however small it is, so decode-step launch
counts are a cost measure a CPU test can check."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

_NO_KERNEL = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "lift_fresh",
    "detach",
    "alias",
}


class _TorchOps(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused and not func.is_view and name not in _NO_KERNEL:
            self.counts[f"torch.{name}"] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_launches():
    """Yields a Counter of launches by kernel ("triton.<kernel>" or "torch.<op>") made inside."""
    from triton.runtime.interpreter import InterpretedFunction

    counts: Counter = Counter()
    run = InterpretedFunction.run
    torch_ops = _TorchOps(counts)

    def counted_run(self: InterpretedFunction, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        if not warmup:
            counts[f"triton.{self.__name__}"] += 1
        torch_ops.paused = True  # the interpreter's own tensor work is not a launch
        try:
            return run(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            torch_ops.paused = False

    InterpretedFunction.run = counted_run
    try:
        with torch_ops:
            yield counts
    finally:
        InterpretedFunction.run = run
