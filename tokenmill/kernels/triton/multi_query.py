"""Triton attention for steps in which every sequence brings the same few query tokens: the verify steps of
speculative decoding (the last known token and k proposals). Reference: `reference.paged_attention`, which
treats them as chunks.

Like the decode kernel, one program per (sequence, KV head, split) reads each K/V tile once for all the
rows it serves, here every query head of the GQA group times every query token (`width` x `group` rows);
long contexts are split across programs and merged with a log-sum-exp reduction, so a single stream's
verify step fills the GPU as its decode step does. The chunk path instead runs one program per query
head and walks the whole context in it.

Causality: query token t sits at position `seq_len - width + t`. Splits divide the keys every row sees
(positions up to the first query token's), so each non-empty split's first key is visible to every row;
the chunk's own later keys (fewer than `width`) are one more tile for split 0, whose rows by then have
seen key 0. `width` and the split count are runtime values: widths whose rows round up to the same power of
two share a compiled variant.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.triton import paged
from tokenmill.kernels.triton.attention import (
    _attend_tile,
    _dot_precision,
    _kv_scales,
    _load_kv_tile,
    _scale_pointers,
    merge_splits,
    split_partials,
)


@triton.jit(do_not_specialize=["width", "num_splits", "stride_bt"])
def _multi_query_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, out_ptr, part_out_ptr, part_lse_ptr,
    k_scale_ptr, v_scale_ptr, scale, width, num_splits,
    stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt, stride_ot, stride_oh,
    GROUP: tl.constexpr, BLOCK_R: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr, INT8: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    seen_by_all = seq_len - width + 1  # keys at or before the first query token
    per_split = tl.cdiv(tl.cdiv(seen_by_all, num_splits), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seen_by_all)

    r = tl.arange(0, BLOCK_R)  # row = query token * GROUP + head in the group
    t = r // GROUP
    heads = kv_head * GROUP + r % GROUP
    r_mask = t < width
    token = seq * width + t
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q = tl.load(
        q_ptr + token[:, None] * stride_qt + heads[:, None] * stride_qh + d[None, :],
        mask=r_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    positions = seen_by_all - 1 + t
    k_scale, v_scale = _kv_scales(k_scale_ptr, v_scale_ptr, FP8)
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_R], tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    block_table = block_tables_ptr + seq * stride_bt
    # this split's tiles of the keys all rows see, then for split 0 one tile of the chunk's later keys
    main_tiles = tl.cdiv(tl.maximum(end - start, 0), BLOCK_N)
    for i in range(0, main_tiles + (split == 0).to(tl.int32)):
        in_main = i < main_tiles
        n = tl.where(in_main, start + i * BLOCK_N, seen_by_all) + tl.arange(0, BLOCK_N)
        n_mask = n < tl.where(in_main, end, seq_len)
        k, v, k_rows, v_rows = _load_kv_tile(
            k_cache_ptr, v_cache_ptr, block_table, k_scale_ptr, v_scale_ptr, n, n_mask, d, d_mask, kv_head,
            stride_cb, stride_cs, stride_ch, q.dtype, PAGE, INT8,
        )  # fmt: skip
        visible = (n[None, :] <= positions[:, None]) & n_mask[None, :]
        m, total, acc = _attend_tile(
            q, k, v, k_rows, v_rows, visible, scale * k_scale, m, total, acc, DOT, INT8
        )
    empty = total == 0.0
    out = acc * (v_scale / tl.where(empty, 1.0, total))[:, None]
    mask = r_mask[:, None] & d_mask[None, :]
    if num_splits == 1:
        tl.store(
            out_ptr + token[:, None] * stride_ot + heads[:, None] * stride_oh + d[None, :], out, mask=mask
        )
    else:
        row = (token * GROUP * tl.num_programs(1) + heads) * num_splits + split
        tl.store(part_out_ptr + row[:, None] * HEAD_DIM + d[None, :], out, mask=mask)
        lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, total)))
        tl.store(part_lse_ptr + row, lse, mask=r_mask)


MAX_WIDTH = 9  # query tokens per sequence, at most: up to 8 proposals (longer chunks take the chunk path)


def multi_query_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    width: int,
    scale: float,
    num_splits: int,
    kv_scales: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q: [seqs * width, heads, head_dim], each sequence's `width` newest tokens in order (their K/V
    already in the cache, `seq_lens` counting them) -> causal attention over each sequence's cache."""
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = num_tokens // width
    _, _, page, num_kv_heads, _ = kv_cache.shape
    group = num_heads // num_kv_heads
    assert 1 < width <= MAX_WIDTH and num_seqs * width == num_tokens, "every sequence brings `width` tokens"
    out = torch.empty_like(q) if out is None else out
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    part_out, part_lse = split_partials(out, num_splits)
    k_scale, v_scale = _scale_pointers(kv_scales, seq_lens)
    block_r = max(16, triton.next_power_of_2(width * group))  # tl.dot takes at least 16 rows
    _multi_query_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, part_out, part_lse, k_scale, v_scale, scale,
        width, num_splits, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1),
        k_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, BLOCK_R=block_r, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        PAGE=page, BLOCK_N=64, FP8=kv_cache.dtype == torch.float8_e4m3fn, INT8=kv_cache.dtype == torch.int8,
        DOT=_dot_precision(q), num_warps=4,
    )  # fmt: skip
    merge_splits(part_out, part_lse, out, num_splits)
    return out


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    kv_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """A step's attention: through the multi-query kernel when every sequence brings the same 2 to
    MAX_WIDTH tokens (sum of query lengths = sequences x the longest), else `paged.paged_attention`."""
    width, num_seqs = meta.max_query_len, meta.block_tables.shape[0]
    if meta.num_decodes == 0 and 1 < width <= MAX_WIDTH and q.shape[0] == num_seqs * width:
        return multi_query_attention(
            q, kv_cache, meta.block_tables, meta.seq_lens, width, scale, meta.decode_splits, kv_scales
        )
    return paged.paged_attention(q, kv_cache, meta, scale, kv_scales)


def compile_variants(
    kv_cache: torch.Tensor,
    num_heads: int,
    dtype: torch.dtype,
    null_block: int,
    kv_scales: torch.Tensor | None = None,
) -> None:
    """`paged.compile_variants`, then every row block the multi-query kernel can select (over the
    null block), so that none compiles while serving."""
    paged.compile_variants(kv_cache, num_heads, dtype, null_block, kv_scales)
    page, head_dim, device = kv_cache.shape[2], kv_cache.shape[-1], kv_cache.device
    group = num_heads // kv_cache.shape[3]
    tables = torch.full((1, triton.cdiv(MAX_WIDTH, page)), null_block, dtype=torch.int32, device=device)
    row_blocks = {max(16, triton.next_power_of_2(w * group)): w for w in range(2, MAX_WIDTH + 1)}
    for width in row_blocks.values():
        q = torch.zeros(width, num_heads, head_dim, dtype=dtype, device=device)
        seq_lens = torch.full((1,), width, dtype=torch.int32, device=device)
        multi_query_attention(q, kv_cache, tables, seq_lens, width, 1.0, 1, kv_scales)
