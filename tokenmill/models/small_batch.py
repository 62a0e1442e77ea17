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
final norm does the same. Projections the fused kernels cannot read (quantized, tensor-parallel) keep
the layer on its ordinary path. A projection wrapped in a `DeltaProjection` (LoRA) runs its base on the
fused GEMV with its rows' delta folded in (`LoRAWeights`): no launch of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tokenmill.kernels.lora_mapping import LoRAWeights
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import SmallBatchOps
from tokenmill.quantization import QuantLinear, UnquantizedMethod

if TYPE_CHECKING:
    from tokenmill.models.llama import DecoderLayer


class DeltaProjection(nn.Module):
    """A wrapper adding a per-row delta to its `base` projection's output (LoRA), which the fused path
    folds into the base's GEMV."""

    base: nn.Module

    def delta_weights(self, rows: int) -> LoRAWeights | None:
        """The delta's operands for this step's first `rows` rows; None when no row's adapter targets
        this projection (the GEMV then runs without it)."""
        raise NotImplementedError


def _base(linear: nn.Module) -> nn.Module:
    return linear.base if isinstance(linear, DeltaProjection) else linear


def _plain(linear: nn.Module) -> bool:
    """A single-rank projection holding its weight in the model dtype, bare or under a DeltaProjection."""
    linear = _base(linear)
    return type(linear) is QuantLinear and type(linear.method) is UnquantizedMethod


def _projections(layer: DecoderLayer) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """qkv, o, gate|up and down (each maybe a DeltaProjection)."""
    attention, mlp = layer.self_attn, layer.mlp
    return attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj


def _delta(linear: nn.Module, rows: int) -> LoRAWeights | None:
    return linear.delta_weights(rows) if isinstance(linear, DeltaProjection) else None


def takes(ops: SmallBatchOps, layer: DecoderLayer, tokens: int) -> bool:
    """Whether `layer` runs `tokens` tokens on the fused path."""
    return tokens <= ops.max_rows and all(map(_plain, _projections(layer)))


def head_takes(ops: SmallBatchOps, lm_head: nn.Module, tokens: int) -> bool:
    """Whether the LM head of `tokens` rows runs as a GEMV: a single-rank head (the largest weight of
    the step: a quarter of Qwen3-0.6B's bytes)."""
    return tokens <= ops.max_rows and type(lm_head) is nn.Linear


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
    rows = hidden.shape[0]
    stream = hidden if residual is None else hidden + residual
    norm = layer.input_layernorm
    base = _base(qkv)
    qkv_out = ops.rms_norm_linear(stream, norm.weight, norm.eps, base.weight, base.bias, _delta(qkv, rows))
    out = layer.self_attn.attend(positions, qkv_out, meta)
    base = _base(o)
    stream = ops.linear(out, base.weight, base.bias, stream, _delta(o, rows))
    norm = layer.post_attention_layernorm
    base = _base(gate_up)
    gate_up_out = ops.rms_norm_linear(
        stream, norm.weight, norm.eps, base.weight, base.bias, _delta(gate_up, rows)
    )
    stream = ops.silu_mul_linear(gate_up_out, _base(down).weight, stream, _delta(down, rows))
    return stream, None
