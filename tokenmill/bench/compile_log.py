"""Which Triton kernel variants a piece of work had to compile (or load from the disk cache).

Triton keeps one compiled binary per specialisation of a kernel's arguments: each constexpr value, and
for plain integers whether they equal 1 or are divisible by 16 (pointers: 16-byte alignment). A launch
whose specialisation the process has not seen yet stops to compile it. `CompileLog` records those
events through Triton's JIT hooks, naming what made each variant different, so a benchmark can show
that its timed region compiled nothing, and which argument is to blame when it did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CompiledVariant:
    kernel: str
    seconds: float  # compile, or load from Triton's disk cache
    constexprs: dict[str, str]  # declared tl.constexpr arguments
    equal_to_1: list[str]  # integer arguments specialised as the constant 1
    divisible_by_16: list[str]  # integer (or pointer) arguments specialised as multiples of 16

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.constexprs.items()]
        parts += [f"{name}==1" for name in self.equal_to_1]
        parts += [f"{name}%16==0" for name in self.divisible_by_16]
        return f"{self.kernel}({', '.join(parts)}) {self.seconds:.2f}s"


@dataclass
class CompileLog:
    """Context manager: while active, every Triton compile in this process is appended to `variants`.
    Records nothing where Triton has no JIT hooks (no Triton, the CPU interpreter, Triton < 3.4)."""

    variants: list[CompiledVariant] = field(default_factory=list)
    _started: dict[str, float] = field(default_factory=dict)
    _saved: tuple[Any, Any] | None = None

    def __enter__(self) -> CompileLog:
        knobs = _runtime_knobs()
        if knobs is not None:
            self._saved = (knobs.jit_cache_hook, knobs.jit_post_compile_hook)
            knobs.jit_cache_hook, knobs.jit_post_compile_hook = self._before, self._after
        return self

    def __exit__(self, *exc_info: object) -> None:
        knobs = _runtime_knobs()
        if knobs is not None and self._saved is not None:
            knobs.jit_cache_hook, knobs.jit_post_compile_hook = self._saved

    def _before(self, *, key: Any, **_: Any) -> bool:
        self._started[str(key)] = time.perf_counter()
        return False  # a true value would tell Triton to skip the compile

    def _after(self, *, key: Any, fn: Any, compile: dict[str, Any], **_: Any) -> None:
        seconds = time.perf_counter() - self._started.pop(str(key), time.perf_counter())
        try:
            self.variants.append(_variant(fn, compile, seconds))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):  # another Triton's layout
            self.variants.append(CompiledVariant(getattr(fn, "name", "?"), round(seconds, 3), {}, [], []))


def _runtime_knobs() -> Any:
    try:
        from triton import knobs
    except ImportError:
        return None
    runtime = getattr(knobs, "runtime", None)
    return runtime if hasattr(runtime, "jit_post_compile_hook") else None


def _variant(fn: Any, compile: dict[str, Any], seconds: float) -> CompiledVariant:
    """Names the specialisation from the hook's compile record: constants and attributes are keyed by
    argument position (a one-element path for non-tuple arguments)."""
    params = fn.jit_function.params
    names = [p.name for p in params]
    declared = {p.name for p in params if p.is_constexpr}
    constants = {names[path[0]]: value for path, value in (compile.get("constants") or {}).items()}
    attrs = (compile.get("configs") or [{}])[0] or {}
    divisible = [
        names[path[0]]
        for path, values in attrs.items()
        if any(name == "tt.divisibility" and value == 16 for name, value in values)
    ]
    return CompiledVariant(
        kernel=fn.name,
        seconds=round(seconds, 3),
        constexprs={k: str(v) for k, v in constants.items() if k in declared},
        equal_to_1=sorted(k for k in constants if k not in declared),
        divisible_by_16=sorted(divisible),
    )
