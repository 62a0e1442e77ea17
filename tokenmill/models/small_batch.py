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
final norm does the same. Projections the fused kernels cannot read (quantized, tensor-parallel, or
wrapped for LoRA) keep the layer on its ordinary path.
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


def _plain(linear: nn.Module) -> bool:
    """A single-rank projection holding its weight in the model dtype, with no wrapper around it."""
    return type(linear) is QuantLinear and type(linear.method) is UnquantizedMethod


def _projections(layer: DecoderLayer) -> tuple[QuantLinear, QuantLinear, QuantLinear, QuantLinear]:
    """qkv, o, gate|up and down."""
    attention, mlp = layer.self_attn, layer.mlp
    return attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj


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
    stream = hidden if residual is None else hidden + residual
    norm = layer.input_layernorm
    qkv_out = ops.rms_norm_linear(stream, norm.weight, norm.eps, qkv.weight, qkv.bias)
    out = layer.self_attn.attend(positions, qkv_out, meta)
    stream = ops.linear(out, o.weight, o.bias, stream)
    norm = layer.post_attention_layernorm
    gate_up_out = ops.rms_norm_linear(stream, norm.weight, norm.eps, gate_up.weight, gate_up.bias)
    return ops.silu_mul_linear(gate_up_out, down.weight, stream), None
