"""A decoder layer's forward pass for decode batches of a few tokens, on the fused GEMVs of
`Ops.small_batch`.

At batch 1 the step time is the sum of ~9 kernel launches per layer, most of them tiny. Here each
projection carries its neighbours: the input norm rides in the qkv GEMV, the o projection adds the
residual, the post-attention norm rides in the gate|up GEMV, and the down projection applies
SiLU-and-mul to its input and adds the residual. That is 6 launches per layer (with the rope/cache
write and attention) instead of 9, and no normalised or activated rows written to memory. The LM
head's GEMV runs on the same kernel.

The layer returns the residual stream itself with no separate residual (the second element None), so
the next layer, fused or not, normalises it as the first layer normalises the embeddings, and the
final norm does the same. A quantized projection runs its method's own fused GEMV (`KernelGemm.
fused_gemv`: the same prologues and epilogue over the stored weight) up to the tokens that GEMV takes; a
tensor-parallel one runs its shard on the same GEMVs (`ShardedLinear.fused_gemv`, all-reducing a
row-parallel partial). A projection wrapped in a `DeltaProjection` (LoRA) runs its base on the
model-dtype GEMV with its rows' delta folded in (`LoRAWeights`): no launch of its own; LoRA over a
quantized or sharded base, or above `MAX_FOLDED_RANK`, keeps the layer on its ordinary path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tokenmill.distributed.linear import ShardedLinear
from tokenmill.kernels.lora_mapping import LoRAExpand, LoRAWeights
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import SmallBatchOps
from tokenmill.quantization import QuantLinear, UnquantizedMethod

if TYPE_CHECKING:
    from tokenmill.models.llama import DecoderLayer


class DeltaProjection(nn.Module):
    """A wrapper adding a per-row delta to its `base` projection's output (LoRA), which the fused path
    folds into the base's GEMV."""

    base: nn.Module
    folds: bool  # whether the fused GEMVs can carry the delta (else the layer takes its ordinary path)

    def delta_weights(self, rows: int) -> LoRAWeights | None:
        """The delta's operands for this step's first `rows` rows; None when no row's adapter targets
        this projection (the GEMV then runs without it)."""
        raise NotImplementedError

    def deferred(self, x: torch.Tensor) -> tuple[torch.Tensor, LoRAExpand | None]:
        """`base(x)` and the delta's expand still to add (None: nothing to add), for the kernel that
        reads the output next (`Ops.silu_and_mul`, `Ops.rms_norm`) to add as it loads it."""
        raise NotImplementedError


def _base(linear: nn.Module) -> nn.Module:
    return linear.base if isinstance(linear, DeltaProjection) else linear


def _model_dtype(linear: nn.Module) -> bool:
    return isinstance(linear, QuantLinear) and type(linear.method) is UnquantizedMethod


def _fused(linear: nn.Module, tokens: int) -> bool:
    """Whether a fused GEMV reads `linear` at `tokens` rows: a single-rank model-dtype weight (bare or
    under a DeltaProjection), a bare tensor-parallel shard in the model dtype, or a weight quantized
    by a method whose fused GEMV takes that many rows."""
    if isinstance(linear, DeltaProjection):
        return linear.folds and type(linear.base) is QuantLinear and _model_dtype(linear.base)
    if isinstance(linear, ShardedLinear):
        return _model_dtype(linear)
    if type(linear) is not QuantLinear:
        return False
    gemm = linear.method.gemm
    return _model_dtype(linear) or (gemm is not None and tokens <= gemm.gemv_up_to())


def _projections(layer: DecoderLayer) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """qkv, o, gate|up and down (each maybe a DeltaProjection)."""
    attention, mlp = layer.self_attn, layer.mlp
    return attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj


def takes(ops: SmallBatchOps, layer: DecoderLayer, tokens: int) -> bool:
    """Whether `layer` runs `tokens` tokens on the fused path."""
    return tokens <= ops.max_rows and all(_fused(linear, tokens) for linear in _projections(layer))


def head_takes(ops: SmallBatchOps, lm_head: nn.Module, tokens: int) -> bool:
    """Whether the LM head of `tokens` rows runs as a GEMV: a single-rank head (the largest weight of
    the step: a quarter of Qwen3-0.6B's bytes)."""
    return tokens <= ops.max_rows and type(lm_head) is nn.Linear


def _project(
    ops: SmallBatchOps,
    linear: nn.Module,
    x: torch.Tensor,
    norm: tuple[torch.Tensor, float] | None = None,
    silu_mul: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`linear` of f(x) (+ its delta) (+ residual) in one GEMV, f the RMSNorm `norm`, SiLU-and-mul of a
    gate|up x or nothing: a shard's, a quantized method's own, or the model-dtype GEMVs of `ops`."""
    base = _base(linear)
    if isinstance(base, ShardedLinear):
        return base.fused_gemv(ops, x, norm, silu_mul, residual)
    if base.method.gemm is not None:
        return base.method.gemm.fused_gemv(base, x, norm, silu_mul, residual)
    lora = linear.delta_weights(x.shape[0]) if isinstance(linear, DeltaProjection) else None
    return ops.project(x, base.weight, base.bias, norm, silu_mul, residual, lora)


def forward(
    ops: SmallBatchOps,
    layer: DecoderLayer,
    positions: torch.Tensor,
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    meta: AttentionMetadata,
) -> tuple[torch.Tensor, None]:
    """The same layer as `DecoderLayer.forward` computes; returns (residual stream after it, None)."""
    qkv, o, gate_up, down = _projections(layer)
    stream = hidden if residual is None else hidden + residual
    norm = layer.input_layernorm
    qkv_out = _project(ops, qkv, stream, norm=(norm.weight, norm.eps))
    out = layer.self_attn.attend(positions, qkv_out, meta)
    stream = _project(ops, o, out, residual=stream)
    norm = layer.post_attention_layernorm
    gate_up_out = _project(ops, gate_up, stream, norm=(norm.weight, norm.eps))
    return _project(ops, down, gate_up_out, silu_mul=True, residual=stream), None
