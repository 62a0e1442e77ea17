"""Per-head q/k RMSNorm (Qwen3), rotary embedding and the KV-cache write, fused into one pass.

`reference.norm_rope_and_cache` composes the three steps with Hugging Face numerics; this kernel reads
each token's q, k and v once, rotates q in place and stores the rotated k and v at the token's cache
slot: quantized to fp8 with a per-tensor scale when the cache is fp8, to int8 with one scale per token
and head (its largest magnitude / 127, written beside the cache) when the cache is int8.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.fp8_rows import ScaledRows
from tokenmill.kernels.triton.fp8_quant import apply_scales

INT8_MAX = tl.constexpr(127.0)


@triton.jit
def _load_heads(base, stride_h, heads, mask, token, row_scale_ptr, col_scale_ptr, HALF: tl.constexpr,
                SCALED: tl.constexpr):  # fmt: skip
    """[heads, 2 * HALF] at `base` as two float32 halves; SCALED: a GEMM's output before its scales
    (`ScaledRows`, one column scale per element of the token's row from `col_scale_ptr`), applied here."""
    j = tl.arange(0, HALF)
    ptrs = base + heads[:, None] * stride_h + j[None, :]
    x1 = tl.load(ptrs, mask=mask, other=0.0)
    x2 = tl.load(ptrs + HALF, mask=mask, other=0.0)
    if SCALED:
        cols = heads[:, None] * (2 * HALF) + j[None, :]
        x1 = apply_scales(x1, row_scale_ptr, col_scale_ptr, token, cols, mask)
        x2 = apply_scales(x2, row_scale_ptr, col_scale_ptr + HALF, token, cols, mask)
    return x1.to(tl.float32), x2.to(tl.float32)


@triton.jit
def _rotate_heads(
    x1, x2, cos, sin, norm_weight, eps, HALF: tl.constexpr, QK_NORM: tl.constexpr
):  # fmt: skip
    """Optionally RMS-normalise each head of [heads, 2 * HALF] (as two halves), then rotate it."""
    j = tl.arange(0, HALF)
    if QK_NORM:
        inv = tl.rsqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / (2 * HALF) + eps)
        x1 = x1 * inv[:, None] * tl.load(norm_weight + j).to(tl.float32)[None, :]
        x2 = x2 * inv[:, None] * tl.load(norm_weight + HALF + j).to(tl.float32)[None, :]
    return x1 * cos[None, :] - x2 * sin[None, :], x2 * cos[None, :] + x1 * sin[None, :]


@triton.jit
def _store_int8_scales(scale_ptrs, x1, x2, mask):
    """Store each head's int8 scale (its largest magnitude / 127) and return its inverse (0 for an
    all-zero head, whose values then quantize to 0)."""
    amax = tl.maximum(tl.max(tl.abs(x1), 1), tl.max(tl.abs(x2), 1))
    tl.store(scale_ptrs, amax / INT8_MAX, mask=mask)
    return tl.where(amax > 0, INT8_MAX / amax, 0.0)


@triton.jit
def _round_half_away(x):
    """Round to the nearest integer, ties away from zero (the reference's `round_half_away`)."""
    return tl.where(x >= 0, tl.floor(x + 0.5), tl.ceil(x - 0.5))


@triton.jit
def _norm_rope_cache_kernel(
    q_ptr, k_ptr, v_ptr, positions_ptr, slots_ptr, cos_ptr, sin_ptr, q_norm_ptr, k_norm_ptr,
    k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr, row_scale_ptr, q_col_scale_ptr, k_col_scale_ptr,
    v_col_scale_ptr, eps, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cs,
    stride_ch, NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_KV: tl.constexpr, HALF: tl.constexpr, QK_NORM: tl.constexpr, KV_QUANT: tl.constexpr,
    SCALED: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    position = tl.load(positions_ptr + token)
    j = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + position * HALF + j)
    sin = tl.load(sin_ptr + position * HALF + j)

    q_heads = tl.arange(0, BLOCK_H)
    q_mask = (q_heads < NUM_HEADS)[:, None]
    q_base = q_ptr + token * stride_qt
    q1, q2 = _load_heads(
        q_base, stride_qh, q_heads, q_mask, token, row_scale_ptr, q_col_scale_ptr, HALF, SCALED
    )
    q1, q2 = _rotate_heads(q1, q2, cos, sin, q_norm_ptr, eps, HALF, QK_NORM)
    q_ptrs = q_base + q_heads[:, None] * stride_qh + j[None, :]
    tl.store(q_ptrs, q1.to(q_ptr.dtype.element_ty), mask=q_mask)
    tl.store(q_ptrs + HALF, q2.to(q_ptr.dtype.element_ty), mask=q_mask)

    kv_heads = tl.arange(0, BLOCK_KV)
    kv_mask = (kv_heads < NUM_KV_HEADS)[:, None]
    k1, k2 = _load_heads(
        k_ptr + token * stride_kt, stride_kh, kv_heads, kv_mask, token, row_scale_ptr, k_col_scale_ptr, HALF,
        SCALED,
    )  # fmt: skip
    k1, k2 = _rotate_heads(k1, k2, cos, sin, k_norm_ptr, eps, HALF, QK_NORM)
    v1, v2 = _load_heads(
        v_ptr + token * stride_vt, stride_vh, kv_heads, kv_mask, token, row_scale_ptr, v_col_scale_ptr, HALF,
        SCALED,
    )  # fmt: skip
    slot = tl.load(slots_ptr + token).to(tl.int64)
    if KV_QUANT == 1:  # fp8: one scale per tensor
        k_inv = 1.0 / tl.load(k_scale_ptr)
        v_inv = 1.0 / tl.load(v_scale_ptr)
        k1, k2, v1, v2 = k1 * k_inv, k2 * k_inv, v1 * v_inv, v2 * v_inv
    elif KV_QUANT == 2:  # int8: one scale per token and head, stored at [slot, head]
        at, heads_mask = slot * NUM_KV_HEADS + kv_heads, kv_heads < NUM_KV_HEADS
        k_inv = _store_int8_scales(k_scale_ptr + at, k1, k2, heads_mask)
        v_inv = _store_int8_scales(v_scale_ptr + at, v1, v2, heads_mask)
        k1, k2 = _round_half_away(k1 * k_inv[:, None]), _round_half_away(k2 * k_inv[:, None])
        v1, v2 = _round_half_away(v1 * v_inv[:, None]), _round_half_away(v2 * v_inv[:, None])
    cache = slot * stride_cs + kv_heads[:, None] * stride_ch + j[None, :]
    dtype = k_cache_ptr.dtype.element_ty
    tl.store(k_cache_ptr + cache, k1.to(dtype), mask=kv_mask)
    tl.store(k_cache_ptr + cache + HALF, k2.to(dtype), mask=kv_mask)
    tl.store(v_cache_ptr + cache, v1.to(dtype), mask=kv_mask)
    tl.store(v_cache_ptr + cache + HALF, v2.to(dtype), mask=kv_mask)


def kv_quant(kv_cache: torch.Tensor) -> int:
    """The kernel's KV_QUANT: 0 a cache in the model dtype, 1 fp8 (per-tensor scales), 2 int8."""
    return {torch.float8_e4m3fn: 1, torch.int8: 2}.get(kv_cache.dtype, 0)


def norm_rope_and_cache(
    q: torch.Tensor | ScaledRows,
    k: torch.Tensor | ScaledRows,
    v: torch.Tensor | ScaledRows,
    positions: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    kv_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as the reference; q is rotated in place. head_dim must be a power of two. q, k and v
    as `ScaledRows` (parts of one fp8 GEMM's output, sharing its row scales): their scales applied as
    they are loaded, and q's values rotated in place."""
    scaled = q if isinstance(q, ScaledRows) else None
    if scaled is not None:
        assert isinstance(k, ScaledRows) and isinstance(v, ScaledRows), "q, k and v come from one GEMM"
        scale_operands = (scaled.row_scales, scaled.col_scales, k.col_scales, v.col_scales)
        q, k, v = scaled.values, k.values, v.values
    else:
        assert isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
        scale_operands = (positions,) * 4  # placeholders: SCALED compiles them out
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    k_cache = kv_cache[0].flatten(0, 1)  # [slots, kv_heads, head_dim]
    v_cache = kv_cache[1].flatten(0, 1)
    q_weight, k_weight, eps = qk_norm if qk_norm is not None else (cos_table, cos_table, 0.0)
    k_scales, v_scales = (kv_scales[0], kv_scales[1]) if kv_scales is not None else (cos_table, cos_table)
    _norm_rope_cache_kernel[(num_tokens,)](
        q, k, v, positions, slot_mapping, cos_table, sin_table, q_weight, k_weight,
        k_cache, v_cache, k_scales, v_scales, *scale_operands, eps,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1),
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, BLOCK_H=triton.next_power_of_2(num_heads),
        BLOCK_KV=triton.next_power_of_2(num_kv_heads), HALF=head_dim // 2,
        QK_NORM=qk_norm is not None, KV_QUANT=kv_quant(kv_cache), SCALED=scaled is not None, num_warps=4,
    )  # fmt: skip
    return q
