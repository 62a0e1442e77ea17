"""Tensor-parallel projections: a `QuantLinear` that holds one rank's part of a fused projection.

Column-parallel (q|k|v, gate|up): each fused part keeps the output rows of this rank's heads (or
intermediate rows), so the activations that follow stay local. Row-parallel (o, down): the weight
keeps this rank's input columns and the partial products are summed over the ranks (one all-reduce
per row-parallel layer); the bias is added once, after the sum (on the fused small-batch path, by rank
0 inside its GEMV, before the sum, which adds it exactly once too). The quantization method stores and
multiplies the local weight as it would a whole one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from tokenmill.distributed.group import TensorParallel
from tokenmill.distributed.sharding import CheckpointTensor, float_part, rank_rows
from tokenmill.kernels.fp8_rows import Fp8Rows, ScaledRows
from tokenmill.quantization import QuantLinear, UnquantizedMethod
from tokenmill.quantization.base import QuantMethod

if TYPE_CHECKING:
    from tokenmill.kernels.ops import SmallBatchOps

Split = Literal["column", "row"]


class ShardedLinear(QuantLinear):
    def __init__(
        self,
        in_features: int,
        out_shards: Sequence[int],
        bias: bool,
        method: QuantMethod,
        tp: TensorParallel,
        split: Split,
        unit: int,
    ) -> None:
        """`in_features`/`out_shards` are the checkpoint's (whole) sizes; `unit` is the rows of one
        head (1 for MLP rows), so a split never cuts a head."""
        row_parts = [rank_rows(rows, unit, tp) for rows in out_shards] if split == "column" else []
        columns = rank_rows(in_features, unit, tp) if split == "row" else slice(0, in_features)
        local_shards = [part.stop - part.start for part in row_parts] if row_parts else list(out_shards)
        super().__init__(columns.stop - columns.start, local_shards, bias, method)
        self.tp, self.split, self.row_parts, self.columns = tp, split, row_parts, columns
        self.full_in, self.full_shards = in_features, tuple(out_shards)

    def checkpoint_shape(self) -> tuple[int, int]:
        return sum(self.full_shards), self.full_in

    def load(self, name: str, tensor: CheckpointTensor, shard: int | None) -> None:
        """Load this rank's part of checkpoint tensor `name` of fused part `shard` (None: all parts,
        stacked as in the checkpoint's shape)."""
        if shard is None and len(self.full_shards) > 1:
            start = 0
            for index, rows in enumerate(self.full_shards):
                super().load(name, self._part(name, tensor[start : start + rows], index), index)
                start += rows
            return
        super().load(name, self._part(name, tensor, shard), shard)

    def _part(self, name: str, tensor: CheckpointTensor, shard: int | None) -> torch.Tensor:
        what = self.describe(name, shard)
        if self.split == "column":
            part = tensor[self.row_parts[shard or 0]]
        elif name == "bias":
            part = tensor[:]
        else:
            part = tensor[:, self.columns]
        return float_part(part, what)

    def forward(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor:
        if self.split == "column":
            return super().forward(x)
        out = self.tp.all_reduce(self.product(x))
        return out if self.bias is None else out + self.bias

    def forward_scaled(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor | ScaledRows:
        """Row-parallel: each rank's partial product has its own activation scales (each rank quantizes its
        own input columns), so it is scaled before the sum."""
        return self(x) if self.split == "row" else super().forward_scaled(x)

    def fused_gemv(
        self,
        ops: SmallBatchOps,
        x: torch.Tensor,
        norm: tuple[torch.Tensor, float] | None = None,
        silu_mul: bool = False,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The projection of f(x) (+ bias, + residual) on the small-batch GEMVs (f: the RMSNorm `norm`,
        SiLU-and-mul of a gate|up x, or nothing), so a decode step under tensor parallelism keeps the
        fused path's launches. Column-parallel: this rank's output rows (f sees the whole x, which every
        rank holds). Row-parallel: rank 0 adds the bias and the residual inside its GEMV and the
        partial products are summed over the ranks, which adds them exactly once."""
        assert type(self.method) is UnquantizedMethod, "the small-batch GEMVs read model-dtype weights"
        once = self.split == "column" or self.tp.is_first
        bias, residual = (self.bias, residual) if once else (None, None)
        out = ops.project(x, self.weight, bias, norm, silu_mul, residual)
        return out if self.split == "column" else self.tp.all_reduce(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.split}-parallel rank {self.tp.rank}/{self.tp.size}"
