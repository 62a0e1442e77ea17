"""A tensor-parallel projection on the small-batch GEMVs (`ShardedLinear.fused_gemv`): the ranks' parts
put together (concatenated column-parallel rows, summed row-parallel partials, as the all-reduce sums
them) equal the whole projection on the same GEMVs, with the norm prologue, the SiLU-and-mul prologue,
and the bias and residual added once."""

from __future__ import annotations

import pytest
import torch

from tokenmill.distributed.group import TensorParallel
from tokenmill.distributed.linear import ShardedLinear
from tokenmill.kernels.ops import REFERENCE_SMALL_BATCH as OPS
from tokenmill.quantization import UnquantizedMethod

HIDDEN, INNER, SIZE = 32, 48, 2


def _ranks(out: int, inner: int, split: str, weight: torch.Tensor, bias: torch.Tensor | None) -> list:
    linears = []
    for rank in range(SIZE):
        tp = TensorParallel(rank, SIZE)
        linear = ShardedLinear(inner, [out], bias is not None, UnquantizedMethod(), tp, split, 1)
        linear.load("weight", weight, None)
        if bias is not None:
            linear.load("bias", bias, None)
        linears.append(linear)
    return linears


@pytest.fixture(autouse=True)
def _sum_is_the_caller_s(monkeypatch) -> None:
    """No process group here: each rank's all-reduce returns its partial; the test sums them."""
    monkeypatch.setattr(TensorParallel, "all_reduce", lambda self, x: x)


def test_column_parallel_rows_of_the_normed_projection_are_the_whole_one_s() -> None:
    x, norm = torch.randn(3, HIDDEN), (torch.rand(HIDDEN) + 0.5, 1e-6)
    weight, bias = torch.randn(INNER, HIDDEN), torch.randn(INNER)
    parts = [r.fused_gemv(OPS, x, norm=norm) for r in _ranks(INNER, HIDDEN, "column", weight, bias)]
    whole = OPS.rms_norm_linear(x, *norm, weight, bias)
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole)


@pytest.mark.parametrize("silu_mul", [False, True], ids=["linear", "silu_mul"])
def test_row_parallel_partials_sum_to_the_whole_projection_with_bias_and_residual_once(
    silu_mul: bool,
) -> None:
    width = 2 * INNER if silu_mul else INNER  # a gate|up input is split as gate and up halves
    x, residual = torch.randn(3, width), torch.randn(3, HIDDEN)
    weight, bias = torch.randn(HIDDEN, INNER), torch.randn(HIDDEN)
    ranks = _ranks(HIDDEN, INNER, "row", weight, bias)
    half = INNER // SIZE
    partials = []
    for rank, linear in enumerate(ranks):
        columns = slice(rank * half, (rank + 1) * half)
        local = torch.cat([x[:, columns], x[:, INNER:][:, columns]], -1) if silu_mul else x[:, columns]
        partials.append(linear.fused_gemv(OPS, local, silu_mul=silu_mul, residual=residual))
    if silu_mul:
        whole = OPS.silu_mul_linear(x, weight, residual) + bias
    else:
        whole = OPS.linear(x, weight, bias, residual)
    torch.testing.assert_close(sum(partials), whole)
