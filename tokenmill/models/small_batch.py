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
fused_gemv`: the same prologues and epilogue over the stored weight) up to the tokens that GEMV takes;
projections no fused kernel reads (tensor-parallel, or quantized past that) keep the layer on its
ordinary path. A projection wrapped in a `DeltaProjection` (LoRA) runs its base on the
fused GEMV and then adds its own delta in place, from the same input and prologue the GEMV read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import SmallBatchOps
from tokenmill.quantization import QuantLinear, UnquantizedMethod

if TYPE_CHECKING:
    from tokenmill.models.llama import DecoderLayer


class DeltaProjection(nn.Module):
    """A wrapper adding a per-row delta to its `base` projection's output (LoRA), which the fused path
    runs as the base's GEMV followed by `add_delta`."""

    base: nn.Module

    def add_delta(
        self,
        ops: SmallBatchOps,
        out: torch.Tensor,
        x: torch.Tensor,
        norm: tuple[torch.Tensor, float] | None = None,
        silu_mul: bool = False,
    ) -> None:
        """out += the delta of the projection's input f(x) (f: RMSNorm with `norm`, or SiLU-and-mul of
        a gate|up x, or nothing), in place."""
        raise NotImplementedError


def _base(linear: nn.Module) -> nn.Module:
    return linear.base if isinstance(linear, DeltaProjection) else linear


def _fused(linear: nn.Module, tokens: int) -> bool:
    """A single-rank projection (bare or under a DeltaProjection) holding its weight in the model dtype,
    or quantized by a method whose fused GEMV takes `tokens` rows."""
    linear = _base(linear)
    if type(linear) is not QuantLinear:
        return False
    gemm = linear.method.gemm
    return type(linear.method) is UnquantizedMethod or (gemm is not None and tokens <= gemm.gemv_up_to())


def _projections(layer: DecoderLayer) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """qkv, o, gate|up and down (each maybe a DeltaProjection)."""
    attention, mlp = layer.self_attn, layer.mlp
    return attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj


def _add_delta(
    ops: SmallBatchOps,
    linear: nn.Module,
    out: torch.Tensor,
    x: torch.Tensor,
    norm: tuple[torch.Tensor, float] | None = None,
    silu_mul: bool = False,
) -> torch.Tensor:
    """`out` after `linear`'s delta (if it has one) is added in place."""
    if isinstance(linear, DeltaProjection):
        linear.add_delta(ops, out, x, norm, silu_mul)
    return out


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
    """`linear` of f(x) (+ residual) in one GEMV, f the RMSNorm `norm`, SiLU-and-mul of a gate|up x or
    nothing: the model-dtype GEMVs of `ops`, or a quantized method's own; then its delta, if any."""
    base = _base(linear)
    gemm = base.method.gemm
    if gemm is not None:
        out = gemm.fused_gemv(base, x, norm, silu_mul, residual)
    elif norm is not None:
        out = ops.rms_norm_linear(x, *norm, base.weight, base.bias)
    elif silu_mul:
        out = ops.silu_mul_linear(x, base.weight, residual)
    else:
        out = ops.linear(x, base.weight, base.bias, residual)
    return _add_delta(ops, linear, out, x, norm, silu_mul)


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
