"""The steps both attention kernels (`attention.py`) take on each tile of a sequence's paged context:
load K and V through the block table, bring the queries to the products' dtype, fold the tile into the
online softmax. Quantized caches are read as they are stored and scaled on the scores and the output."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_kv_tile(
    k_cache_ptr, v_cache_ptr, block_table_ptr, k_scale_ptr, v_scale_ptr, n, n_mask, d, d_mask, kv_head,
    stride_cb, stride_cs, stride_ch, dtype: tl.constexpr, PAGE: tl.constexpr, INT8: tl.constexpr,
):  # fmt: skip
    """Keys and values of tokens `n` of one sequence and KV head, found through its block table, in the
    queries' dtype, and their per-token scales. Both quantized caches convert exactly (every e4m3 value
    and every int8 value is a bf16/fp16 value), so no element is scaled here: an fp8 cache's two
    per-tensor scales are applied to the scores and the output, and an int8 cache's scales (one per
    token and head, in a [slots, kv_heads] tensor beside the contiguous cache, at the cache offset /
    head_dim) to the scores' columns and to p's. Without them the per-token scales are 1."""
    page = tl.load(block_table_ptr + n // PAGE, mask=n_mask, other=0)
    offsets = page.to(tl.int64) * stride_cb + (n % PAGE) * stride_cs + kv_head * stride_ch
    mask = n_mask[:, None] & d_mask[None, :]
    k = tl.load(k_cache_ptr + offsets[:, None] + d[None, :], mask=mask, other=0.0)
    v = tl.load(v_cache_ptr + offsets[:, None] + d[None, :], mask=mask, other=0.0)
    if INT8:
        k_rows = tl.load(k_scale_ptr + offsets // stride_ch, mask=n_mask, other=0.0)
        v_rows = tl.load(v_scale_ptr + offsets // stride_ch, mask=n_mask, other=0.0)
    else:
        k_rows = tl.full(n.shape, 1.0, tl.float32)
        v_rows = k_rows
    return k.to(dtype), v.to(dtype), k_rows, v_rows


@triton.jit
def mma_queries(q, FP8: tl.constexpr):
    """The queries as the products' operand: bf16 queries meet an fp8 cache in fp16. An e4m3 pair
    converts to an fp16 pair in one instruction, exactly; to bf16 it took a further conversion per
    element, so the fp8 cache's tiles cost more instructions than their bytes saved (decode attention
    at Qwen3-4B's shape: 52.5 -> 39.4 us at 128 tokens of context, H200). fp16 holds every bf16 q of
    magnitude 2^-14 to 65504 exactly (q is clamped to that range) and rounds p, in [0, 1], finer."""
    if FP8 and q.dtype == tl.bfloat16:
        q = tl.clamp(q.to(tl.float32), -65504.0, 65504.0).to(tl.float16)
    return q


@triton.jit
def kv_scales(k_scale_ptr, v_scale_ptr, FP8: tl.constexpr):
    """The fp8 cache's (k, v) dequantisation scales; 1 for a cache in the model's dtype (one return:
    Triton 3.6 compiles the code after a static early return)."""
    k_scale, v_scale = 1.0, 1.0
    if FP8:
        k_scale, v_scale = tl.load(k_scale_ptr), tl.load(v_scale_ptr)
    return k_scale, v_scale


@triton.jit
def attend_tile(
    q, k, v, k_rows, v_rows, visible, scale, m, total, acc, DOT: tl.constexpr, ROWS: tl.constexpr
):
    """One online-softmax step: fold a tile of keys/values into the running max, sum and output. With
    ROWS, each key's score is scaled by its `k_rows` entry and each value's weight by its `v_rows`."""
    scores = tl.dot(q, tl.trans(k), input_precision=DOT) * scale
    if ROWS:
        scores = scores * k_rows[None, :]
    scores = tl.where(visible, scores, float("-inf"))
    m_new = tl.maximum(m, tl.max(scores, 1))
    p = tl.exp(scores - m_new[:, None])
    alpha = tl.exp(m - m_new)
    total = total * alpha + tl.sum(p, 1)
    weights = p * v_rows[None, :] if ROWS else p
    acc = acc * alpha[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=DOT)
    return m_new, total, acc
