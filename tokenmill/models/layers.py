"""Building blocks shared by the decoder families: norm, rotary tables, attention, MLP.

Projections are fused (q|k|v into one matrix, gate|up into one) so a step issues fewer, larger GEMMs;
the loaders split checkpoint tensors into the fused shards. Each block calls its kernels through the
`Ops` backend it was built with (Triton kernels, or PyTorch references with Hugging Face numerics).
Each projection is a `QuantLinear` whose storage and matmul belong to the model's quantization method,
chosen by its checkpoint module names (`prefix`), so `modules_to_not_convert` can name any of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tokenmill.distributed.linear import ShardedLinear, Split
from tokenmill.kernels.fp8_rows import Fp8Rows, ScaledRows
from tokenmill.kernels.lora_mapping import LoRAExpand
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import Ops
from tokenmill.models.config import ModelConfig
from tokenmill.models.small_batch import DeltaProjection
from tokenmill.quantization import QuantLinear, UnquantizedMethod


def projection(
    config: ModelConfig,
    in_features: int,
    shards: dict[str, int],
    bias: bool,
    prefix: str,
    split: Split = "column",
    unit: int = 1,
) -> QuantLinear:
    """A linear fusing the checkpoint modules `prefix.<name>` for each name of `shards` (name -> rows).
    Under tensor parallelism it holds this rank's `split` of them, never cutting a `unit` (a head)."""
    quant = config.quantization
    names = [f"{prefix}.{name}" for name in shards]
    method = UnquantizedMethod() if quant is None else quant.method_for(names)
    tp = config.tensor_parallel
    if tp.size > 1:
        return ShardedLinear(in_features, list(shards.values()), bias, method, tp, split, unit)
    return QuantLinear(in_features, list(shards.values()), bias, method)


def project(
    linear: nn.Module, x: torch.Tensor | Fp8Rows
) -> tuple[torch.Tensor | ScaledRows, LoRAExpand | None]:
    """`linear(x)`, with what is left for the kernel that reads the output next (`Ops.silu_and_mul` after
    gate|up, `Ops.rms_norm` after o and down) to apply as it loads it: a LoRA wrapper's expand, or an fp8
    GEMM's scales (the output as `ScaledRows`). One launch and one pass over the output fewer."""
    if isinstance(linear, DeltaProjection):
        return linear.deferred(x)
    return leave_scales(linear, x), None


def leave_scales(linear: nn.Module, x: torch.Tensor | Fp8Rows) -> torch.Tensor | ScaledRows:
    """`linear(x)`, leaving an fp8 GEMM's output scales to the caller's next kernel (the output as
    `ScaledRows`); a LoRA wrapper's output comes scaled (its delta is added to it)."""
    return linear.forward_scaled(x) if isinstance(linear, QuantLinear) else linear(x)


def takes_fp8_rows(linear: nn.Module, tokens: int) -> bool:
    """Whether `linear` multiplies `tokens` rows as fp8 activations, so that the kernel writing its input
    should write them as `Fp8Rows` (a LoRA wrapper never does: its delta reads model-dtype rows)."""
    return isinstance(linear, QuantLinear) and linear.takes_fp8_rows(tokens)


class RMSNorm(nn.Module):
    """RMS normalisation in float32; with `residual`, adds it first and returns the sum as well."""

    def __init__(self, dim: int, eps: float, ops: Ops) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.ops = ops

    def forward(
        self,
        x: torch.Tensor | ScaledRows,
        residual: torch.Tensor | None = None,
        lora: LoRAExpand | None = None,
        quantize: bool = False,
    ) -> tuple[torch.Tensor | Fp8Rows, torch.Tensor | None]:
        """`lora`: the pending expand of the projection x came from (`project`), added to x first.
        `quantize`: the output as `Fp8Rows`, for a projection that `takes_fp8_rows`."""
        return self.ops.rms_norm(x, self.weight, self.eps, residual, lora, quantize)


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with Llama-3 or linear context scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return inv_freq
    kind = scaling["rope_type"]
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        original = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        in_between = (wavelen >= original / high) & (wavelen <= original / low)
        return torch.where(in_between, blended, scaled)
    raise ValueError(f"rope scaling type {kind!r} is not supported (supported: linear, llama3)")


class RotaryTables(nn.Module):
    """cos/sin of every position's rotary angles ([positions, head_dim / 2], float32), built once."""

    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        angles = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)


class Attention(nn.Module):
    """Self-attention over the paged KV cache. `kv_cache` is attached by the model runner."""

    def __init__(self, config: ModelConfig, rotary: RotaryTables, ops: Ops, prefix: str) -> None:
        super().__init__()
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        q_size = config.num_attention_heads * self.head_dim
        kv_size = config.num_key_value_heads * self.head_dim
        qkv = {"q_proj": q_size, "k_proj": kv_size, "v_proj": kv_size}
        bias = config.attention_bias
        self.qkv_proj = projection(config, config.hidden_size, qkv, bias, prefix, unit=self.head_dim)
        o = {"o_proj": config.hidden_size}
        self.o_proj = projection(config, q_size, o, False, prefix, "row", self.head_dim)
        self.q_size, self.kv_size, _ = self.qkv_proj.out_shards  # this rank's heads
        self.num_heads, self.num_kv_heads = self.q_size // self.head_dim, self.kv_size // self.head_dim
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, ops) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, ops) if config.qk_norm else None
        self.rotary = rotary
        self.ops = ops
        self.kv_cache: torch.Tensor | None = None  # [2, num_blocks, block_size, kv_heads, head_dim]
        self.kv_scales: torch.Tensor | None = None  # a quantized cache's scales, attached with it

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor | Fp8Rows, meta: AttentionMetadata
    ) -> tuple[torch.Tensor | ScaledRows, LoRAExpand | None]:
        """The o projection's output and what it leaves to the residual norm that reads it (`project`)."""
        return project(self.o_proj, self.attend(positions, leave_scales(self.qkv_proj, x), meta))

    def attend(
        self, positions: torch.Tensor, qkv: torch.Tensor | ScaledRows, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Attention of the projected q|k|v over the cache, before o_proj: [tokens, heads * head_dim]. As
        `ScaledRows`, q|k|v's scales are applied by the RoPE/cache kernel."""
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.unflatten(-1, (self.num_heads, self.head_dim))
        k = k.unflatten(-1, (self.num_kv_heads, self.head_dim))
        v = v.unflatten(-1, (self.num_kv_heads, self.head_dim))
        qk_norm = None
        if self.q_norm is not None and self.k_norm is not None:
            qk_norm = (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps)
        assert self.kv_cache is not None, "the model runner attaches the KV cache before the first step"
        q = self.ops.norm_rope_and_cache(
            q, k, v, positions, self.rotary.cos, self.rotary.sin, self.kv_cache, meta.slot_mapping, qk_norm,
            self.kv_scales,
        )  # fmt: skip
        return self.ops.paged_attention(q, self.kv_cache, meta, self.scale, self.kv_scales).flatten(1)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, ops: Ops, prefix: str) -> None:
        super().__init__()
        size = config.intermediate_size
        gate_up = {"gate_proj": size, "up_proj": size}
        self.gate_up_proj = projection(config, config.hidden_size, gate_up, False, prefix)
        self.down_proj = projection(config, size, {"down_proj": config.hidden_size}, False, prefix, "row")
        self.ops = ops

    def forward(self, x: torch.Tensor | Fp8Rows) -> tuple[torch.Tensor | ScaledRows, LoRAExpand | None]:
        """The down projection's output and what it leaves to the residual norm that reads it (`project`)."""
        gate_up, lora = project(self.gate_up_proj, x)  # a LoRA wrapper's expand rides in SiLU-and-mul
        quantize = takes_fp8_rows(self.down_proj, gate_up.shape[0])
        return project(self.down_proj, self.ops.silu_and_mul(gate_up, lora, quantize))
