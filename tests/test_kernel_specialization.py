"""No attention-kernel variant depends on a batch's lengths: every Triton specialisation a batch can
select is one that the start-up warm-up (`compile_variants`) already compiled, so a fresh
server's first batch compiles nothing.

Triton compiles one binary per specialisation key: each constexpr's value, and for every other
argument its type plus, unless the kernel opts out with `do_not_specialize`, whether an integer equals
1 or is divisible by 16 (pointers: 16-byte alignment). The keys are computed here the way Triton does,
from each launch's arguments, so the test runs under the CPU interpreter too."""

from __future__ import annotations

import inspect

import pytest
import torch

pytest.importorskip("triton")
libtriton = pytest.importorskip("triton._C.libtriton")
if not hasattr(libtriton, "native_specialize_impl"):
    pytest.skip("this Triton computes specialisations differently", allow_module_level=True)

from triton.backends.compiler import BaseBackend  # noqa: E402

from tokenmill.kernels.triton import attention, split_merge  # noqa: E402
from tokenmill.kernels.triton.paged import compile_variants, decode_splits  # noqa: E402

KERNELS = (attention._decode_kernel, split_merge._merge_splits_kernel, attention._prefill_kernel)
PAGE, KV_HEADS, GROUP, HEAD_DIM, BLOCKS = 16, 2, 2, 32, 80
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _unspecialised(kernel) -> set[str]:  # a JITFunction, or the interpreter's stand-in
    if hasattr(kernel, "params"):
        return {p.name for p in kernel.params if p.do_not_specialize}
    return set(kernel.kwargs.get("do_not_specialize") or ())


def _key(kernel, args: tuple, kwargs: dict) -> tuple:
    signature = inspect.signature(kernel.fn).parameters
    bound = dict(zip(signature, args)) | {k: v for k, v in kwargs.items() if k in signature}
    skip = _unspecialised(kernel)
    key = []
    for name, param in signature.items():
        if "constexpr" in str(param.annotation):
            key.append((name, bound[name]))
        else:
            key.append(
                (
                    name,
                    libtriton.native_specialize_impl(BaseBackend, bound[name], False, name not in skip, True),
                )
            )
    return (kernel.fn.__name__, tuple(key))


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> set[tuple]:
    """The specialisation key of every attention-kernel launch while the test runs."""
    seen: set[tuple] = set()
    for kernel in KERNELS:
        monkeypatch.setattr(
            kernel,
            "pre_run_hooks",
            [*kernel.pre_run_hooks, lambda *a, _k=kernel, **kw: seen.add(_key(_k, a, kw))],
        )
    return seen


def _batch(lens: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block tables `width` wide (as wide as the batch's longest context) over distinct blocks."""
    tables = torch.arange(len(lens) * width, dtype=torch.int32).view(len(lens), width) % (BLOCKS - 1)
    return tables.to(DEVICE), torch.tensor(lens, dtype=torch.int32, device=DEVICE)


@pytest.mark.slow  # ~8 s in the interpreter
def test_batches_select_only_variants_the_warm_up_compiled(launches: set[tuple]) -> None:
    heads = KV_HEADS * GROUP
    cache = torch.randn(2, BLOCKS, PAGE, KV_HEADS, HEAD_DIM, device=DEVICE)
    compile_variants(cache, heads, torch.float32, BLOCKS - 1)
    compiled = set(launches)
    launches.clear()
    for lens in ([1], [5, 16], [17, 40], [250, 3], [256, 9, 100], [513], [1024, 7]):
        width = -(-max(lens) // PAGE)  # 1, 1, 3, 16, 16, 33, 64 blocks: == 1, % 16 == 0 and neither
        tables, seq_lens = _batch(lens, width)
        q = torch.randn(len(lens), heads, HEAD_DIM, device=DEVICE)
        splits = decode_splits(len(lens), KV_HEADS, max(lens), num_sms=132)
        attention.decode_attention(q, cache, tables, seq_lens, 0.1, splits)
        for query_len in (1, min(lens), 40):  # decode-like chunks (BLOCK_M 16), long prompts (64)
            query_lens = [min(query_len, n) for n in lens]
            starts = torch.tensor([0, *query_lens], device=DEVICE).cumsum(0).to(torch.int32)
            q = torch.randn(sum(query_lens), heads, HEAD_DIM, device=DEVICE)
            attention.prefill_attention(q, cache, tables, seq_lens, starts, max(query_lens), 0.1)
    assert {key[0] for key in launches} == {kernel.fn.__name__ for kernel in KERNELS}
    assert not [_difference(key, compiled) for key in launches - compiled]


def _difference(key: tuple, compiled: set[tuple]) -> str:
    """The arguments in which a launch differs from the closest compiled variant of its kernel."""
    name, args = key
    others = [dict(k[1]) for k in compiled if k[0] == name]
    closest = min(others, key=lambda o: sum(o[a] != v for a, v in args), default={})
    return f"{name}: " + ", ".join(
        f"{a}={v} (compiled: {closest.get(a)})" for a, v in args if closest.get(a) != v
    )
