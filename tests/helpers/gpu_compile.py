"""Compile a Triton kernel for a given NVIDIA architecture on a machine without a GPU (Triton ships
ptxas), so CI proves a kernel builds for Ampere, Ada, Hopper and Blackwell, not only in the interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import torch

ARCHITECTURES = {"ampere": 80, "ada": 89, "hopper": 90, "blackwell-rtx": 120}
# The most shared memory one program may take on each (the opt-in maximum per block, CUDA guide's
# compute-capability table): an RTX 4090 or 5090 gives 99 KB, a third of Hopper's. sm_80's entry is
# sm_86's (RTX 30, A10, A40: 99 KB against the A100's 163), which builds the same kernels.
SHARED_MEMORY_LIMIT = {80: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 120: 99 * 1024}

_POINTER_TYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.float8_e4m3fn: "fp8e4nv",
}


def compile_for(
    kernel: Any, capability: int, options: dict[str, Any] | None = None, aligned: bool = False, **args: Any
) -> bytes:
    """The cubin of `kernel` (`compiled_for`'s)."""
    return compiled_for(kernel, capability, options, aligned, **args).asm["cubin"]


def compiled_for(
    kernel: Any, capability: int, options: dict[str, Any] | None = None, aligned: bool = False, **args: Any
) -> Any:
    """`kernel` (a @triton.jit function) compiled for sm_<capability> (its `asm`, and its `metadata`, e.g.
    `shared` bytes), given every argument by name: a tensor stands for a pointer to its dtype, an int for
    i32, a float for fp32; constexpr parameters take their values. `options` are compile options
    (num_warps, num_stages, maxnreg, ...). `aligned` marks what a launch would find 16-aligned: pointers,
    and ints that are multiples of 16 (unless the kernel does not specialise them). An int equal to 1
    becomes the constant 1, as a launch makes it (a loop of `range(n)` with n == 1 compiles to its body
    alone)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature: dict[str, str] = {}
    constants: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for index, param in enumerate(kernel.params):
        value = args[param.name]
        multiple = isinstance(value, torch.Tensor) or (type(value) is int and value % 16 == 0)
        if aligned and not param.is_constexpr and not param.do_not_specialize and multiple:
            attrs[(index,)] = [["tt.divisibility", 16]]
        if param.is_constexpr or (type(value) is int and value == 1 and not param.do_not_specialize):
            signature[param.name], constants[param.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = "*" + _POINTER_TYPES[value.dtype]
        else:
            signature[param.name] = "fp32" if isinstance(value, float) else "i32"
    return triton.compile(
        ASTSource(kernel, signature, constants, attrs),
        target=GPUTarget("cuda", capability, 32),
        options=options,
    )


def resource_usage(cubin: bytes) -> dict[str, int]:
    """The kernel's registers a thread ("REG"), stack bytes ("STACK", where ptxas spills) and local memory
    bytes ("LOCAL"), as `cuobjdump -res-usage` (shipped with Triton) reports them; a Triton cubin holds one
    kernel (with several, the last one's would be kept)."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run([tool, "-res-usage", file.name], capture_output=True, text=True, check=True)
    return {key: int(value) for key, value in re.findall(r"\b(REG|LOCAL|STACK):(\d+)", report.stdout)}


def run_compiled(function: str, capability: int) -> None:
    """Call `function` ("package.module:name", taking the capability) in a fresh Python: kernels made
    under TRITON_INTERPRET=1 (as tests make them) are interpreter objects that cannot be compiled."""
    module, _, name = function.partition(":")
    code = f"import {module} as m; m.{name}({capability})"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{function} for sm_{capability} failed:\n{result.stderr[-4000:]}"
