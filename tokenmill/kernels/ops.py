"""The kernel backend as one object: the models and the runner call `ops.<kernel>(...)`, and which
implementation runs is decided once, at load, by `select_ops`.

The Triton package is imported here lazily, so `import tokenmill` works where Triton is missing (CPU-only
torch, macOS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

from tokenmill.kernels import lora_reference, reference
from tokenmill.kernels.fp8_rows import Fp8Rows, ScaledRows
from tokenmill.kernels.lora_mapping import LoRAExpand, LoRAMapping, LoRAWeights
from tokenmill.kernels.metadata import AttentionMetadata

logger = logging.getLogger(__name__)

KernelChoice = Literal["auto", "triton", "torch"]
Tensor = torch.Tensor
QKNorm = tuple[Tensor, Tensor, float]  # q weight, k weight, eps of Qwen3's per-head norms

# (x, weight, eps, residual, lora, quantize) -> (RMSNorm of x + residual, x + residual); without residual,
# of x alone; lora: the pending expand of the projection x came from (`LoRAExpand`), added to x first (a
# kernel may add it to x in place); quantize: the normed rows as `Fp8Rows`, for a projection that reads
# fp8 activations; x as `ScaledRows`: an fp8 GEMM's output, its scales applied first
RMSNormOp = Callable[
    [Tensor | ScaledRows, Tensor, float, Tensor | None, LoRAExpand | None, bool],
    tuple[Tensor | Fp8Rows, Tensor | None],
]
# (gate_up, lora, quantize) -> SiLU(gate) * up, [rows, 2 * width] -> [rows, width]; lora: the pending
# expand of the gate|up projection (`LoRAExpand`), added to gate and up first; quantize: as `Fp8Rows`;
# gate_up as `ScaledRows`: an fp8 GEMM's output, its scales applied first
SiluAndMulOp = Callable[[Tensor | ScaledRows, LoRAExpand | None, bool], Tensor | Fp8Rows]
# (q, k, v, positions, cos_table, sin_table, kv_cache, slot_mapping, qk_norm, kv_scales) -> rotated q;
# optional per-head q/k norm, rotary embedding, and the write of k and v at their cache slots; q, k and v
# as `ScaledRows`: parts of one fp8 GEMM's output, their scales applied first
QKV = Tensor | ScaledRows
NormRopeAndCacheOp = Callable[
    [QKV, QKV, QKV, Tensor, Tensor, Tensor, Tensor, Tensor, QKNorm | None, Tensor | None], Tensor
]
# (q, kv_cache, meta, scale, kv_scales) -> causal attention of a step's new tokens over the paged cache
PagedAttentionOp = Callable[[Tensor, Tensor, AttentionMetadata, float, Tensor | None], Tensor]
# (num_seqs, num_kv_heads, max_len, num_sms) -> AttentionMetadata.decode_splits
DecodeSplitsOp = Callable[[int, int, int, int], int]
# (kv_cache, num_heads, dtype, null_block, kv_scales): what would otherwise happen during the first steps
WarmUpOp = Callable[[Tensor, int, torch.dtype, int, Tensor | None], None]
# (x, lora_a [slots, shards, rank, in], ranks [slots, shards], mapping) -> x·Aᵀ per token's slot as
# float32 partial sums over parts of `in`, [parts, tokens, 1, shards, rank] (split-K: the expand adds the
# parts up); ranks: each slot's own rank per shard (0: not targeted), for the kernels to skip padding
LoRAShrinkOp = Callable[[Tensor, Tensor, Tensor, LoRAMapping], Tensor]
# (y, h, lora_b [slots, out, rank], ranks, out_shards, mapping): y += (Σ parts of h)·Bᵀ per token's slot
# and shard, in place; h [parts, tokens, slots or 1, shards, rank]: a shrink's, or every slot's x·Aᵀ
LoRAExpandOp = Callable[[Tensor, Tensor, Tensor, Tensor, tuple[int, ...], LoRAMapping], None]
# The small-batch projections take each row's LoRA delta (B·A of the projection's input, per row's slot:
# `LoRAWeights`, or None) and add it to the projection's output before the residual.
# (x, weight, bias, residual, lora) -> x·Wᵀ + bias + delta, then + residual
LinearOp = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, LoRAWeights | None], Tensor]
# (x, norm_weight, eps, weight, bias, lora) -> RMSNorm(x)·Wᵀ + bias + delta
NormLinearOp = Callable[[Tensor, Tensor, float, Tensor, Tensor | None, LoRAWeights | None], Tensor]
# (gate_up, weight, residual, lora) -> (SiLU(gate) * up)·Wᵀ + delta, then + residual
SiluMulLinearOp = Callable[[Tensor, Tensor, Tensor | None, LoRAWeights | None], Tensor]

SMALL_BATCH_MAX_ROWS = 8  # decode batches up to this many tokens run the fused GEMVs


@dataclass(frozen=True)
class SmallBatchOps:
    """A decoder layer's projections for a few tokens, with the norms, the SiLU-and-mul and the residual
    adds fused into them: at one token per step launches, not bytes, set the step time."""

    max_rows: int
    linear: LinearOp
    rms_norm_linear: NormLinearOp
    silu_mul_linear: SiluMulLinearOp

    def project(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        norm: tuple[Tensor, float] | None = None,
        silu_mul: bool = False,
        residual: Tensor | None = None,
        lora: LoRAWeights | None = None,
    ) -> Tensor:
        """f(x)·Wᵀ + bias + delta (+ residual) on the GEMV that fuses f: the RMSNorm `norm` (weight,
        eps), SiLU-and-mul of a gate|up x, or nothing. A normed projection opens a half-layer (no
        residual); behind SiLU-and-mul (no bias in the kernel) a bias is added after the residual."""
        if norm is not None:
            assert residual is None, "a normed projection opens a half-layer: no residual to add"
            return self.rms_norm_linear(x, *norm, weight, bias, lora)
        if silu_mul:
            out = self.silu_mul_linear(x, weight, residual, lora)
            return out if bias is None else out + bias
        return self.linear(x, weight, bias, residual, lora)


REFERENCE_SMALL_BATCH = SmallBatchOps(
    SMALL_BATCH_MAX_ROWS,
    reference.linear,
    reference.rms_norm_linear,
    reference.silu_mul_linear,
)


@dataclass(frozen=True)
class Ops:
    """One backend's kernels, with the same contract (and within rounding, the same results) in each."""

    name: Literal["torch", "triton"]
    supports_cuda_graphs: bool  # its kernels can be captured (the reference reads host-side lists)
    rms_norm: RMSNormOp
    silu_and_mul: SiluAndMulOp
    norm_rope_and_cache: NormRopeAndCacheOp
    paged_attention: PagedAttentionOp
    decode_splits: DecodeSplitsOp
    warm_up: WarmUpOp
    lora_shrink: LoRAShrinkOp = lora_reference.lora_shrink
    lora_expand: LoRAExpandOp = lora_reference.lora_expand
    small_batch: SmallBatchOps | None = REFERENCE_SMALL_BATCH  # None: small batches run as large ones


def _one_split(num_seqs: int, num_kv_heads: int, max_len: int, num_sms: int) -> int:
    """The reference attends each decode in one pass."""
    return 1


def _nothing_to_warm_up(
    kv_cache: Tensor, num_heads: int, dtype: torch.dtype, null_block: int, kv_scales: Tensor | None
) -> None:
    """The reference compiles nothing."""


TORCH_OPS = Ops(
    name="torch",
    supports_cuda_graphs=False,
    rms_norm=reference.rms_norm,
    silu_and_mul=reference.silu_and_mul,
    norm_rope_and_cache=reference.norm_rope_and_cache,
    paged_attention=reference.paged_attention,
    decode_splits=_one_split,
    warm_up=_nothing_to_warm_up,
)


def triton_ops(device: torch.device) -> Ops:
    """The Triton backend; raises ImportError when the triton package cannot be imported."""
    from tokenmill.kernels.triton import (
        activation,
        lora,
        norm,
        paged,
        rope,
        skinny_gemm,
    )

    return Ops(
        name="triton",
        supports_cuda_graphs=device.type == "cuda",
        rms_norm=norm.rms_norm,
        silu_and_mul=activation.silu_and_mul,
        norm_rope_and_cache=rope.norm_rope_and_cache,
        paged_attention=paged.paged_attention,
        decode_splits=paged.decode_splits,
        warm_up=paged.compile_variants,
        lora_shrink=lora.lora_shrink,
        lora_expand=lora.lora_expand,
        small_batch=SmallBatchOps(
            SMALL_BATCH_MAX_ROWS,
            skinny_gemm.linear,
            skinny_gemm.rms_norm_linear,
            skinny_gemm.silu_mul_linear,
        ),
    )


def select_ops(kernels: KernelChoice, device: torch.device, small_batch: bool = True) -> Ops:
    """`torch`: the references. `triton`: the Triton kernels, which need the triton package and a CUDA
    device (or, for tests, Triton's CPU interpreter: TRITON_INTERPRET=1). `auto`: Triton on CUDA when it
    imports, else the references. `small_batch` False: no fused small-batch path (to measure its gain)."""
    ops = _select(kernels, device)
    return ops if small_batch else replace(ops, small_batch=None)


def _select(kernels: KernelChoice, device: torch.device) -> Ops:
    if kernels == "torch" or (kernels == "auto" and device.type != "cuda"):
        return TORCH_OPS
    try:
        ops = triton_ops(device)
    except ImportError as exc:
        if kernels == "triton":
            raise ValueError(
                f"kernels='triton' needs the triton package, which cannot be imported ({exc}); "
                "install triton or use kernels='torch'"
            ) from exc
        logger.warning("triton cannot be imported (%s): using the PyTorch reference kernels", exc)
        return TORCH_OPS
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"kernels='triton' needs a CUDA device, not {device.type}; use kernels='torch'")
    return ops
