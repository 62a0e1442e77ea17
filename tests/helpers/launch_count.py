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


def decode_step_launches(llm: Any, lora_request: Any = None) -> Counter:
    """The launches of the model forward pass of the last single-token step of a short greedy
    generation of one sequence by `llm` (an `LLM` on kernels="triton", in the interpreter)."""
    from tokenmill import SamplingParams

    model = llm.engine.runner.model
    counts: list[tuple[int, Counter]] = []
    forward = model.forward

    def counted(input_ids, positions, meta):
        with count_launches() as launches:
            hidden = forward(input_ids, positions, meta)
        counts.append((input_ids.shape[0], launches))
        return hidden

    model.forward = counted
    try:
        params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
        llm.generate([[5, 6, 7]], params, use_tqdm=False, lora_request=lora_request)
    finally:
        del model.forward
    decodes = [launches for rows, launches in counts if rows == 1]
    assert decodes, "no single-token forward pass ran"
    return decodes[-1]
