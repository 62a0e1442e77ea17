"""Triton attention over the paged KV cache (reference: `reference.paged_attention`).

Decode: one program per (token, KV head, split) computes all query heads of the GQA group at once,
so each K/V tile is read once per group; long contexts are split across programs and merged with a
log-sum-exp reduction. A verify step's few tokens per sequence run it too, one program per token, so
each rounds exactly as its own decode step would. Prefill: flash-attention over query tiles of one head,
reading K/V through the block table, so chunked prefill and cached prefixes need no copy. Portable
Triton (no Hopper-only instructions): runs on Ampere, Ada, Hopper and Blackwell, and on CPU under
TRITON_INTERPRET=1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.attention_tiles import attend_tile, kv_scales, load_kv_tile, mma_queries
from tokenmill.kernels.triton.split_merge import merge_splits, split_partials


# Block-table rows are as wide as the batch's longest context, so their stride changes from step to step:
# specialising on it (== 1, % 16 == 0) would compile new variants mid-serving for no gain. Nor on `width`:
# decode (1) and verify steps (k + 1) run one compiled kernel, and so round alike.
@triton.jit(do_not_specialize=["stride_bt", "width"])
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_ptr, out_ptr, part_out_ptr,
    part_lse_ptr, k_scale_ptr, v_scale_ptr, scale, width,
    stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt, stride_ot, stride_oh,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, FP8: tl.constexpr, DOT: tl.constexpr,
    STAGES: tl.constexpr, INT8: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0) // width
    t = tl.program_id(0) % width  # which of the sequence's new tokens; none past its query length
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    live = t < q_len
    token = q_start + t
    seq_len = tl.load(seq_lens_ptr + seq) - q_len + 1 + t  # the context of this token's decode
    per_split = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.where(live, tl.minimum(start + per_split, seq_len), start)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    g_mask = g < tl.where(live, GROUP, 0)  # no head of a token past the sequence's query length
    d_mask = d < HEAD_DIM
    q = tl.load(
        q_ptr + token * stride_qt + heads[:, None] * stride_qh + d[None, :],
        mask=g_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    q = mma_queries(q, FP8)
    k_scale, v_scale = kv_scales(k_scale_ptr, v_scale_ptr, FP8)
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for n0 in tl.range(start, end, BLOCK_N, num_stages=STAGES):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < end
        k, v, k_rows, v_rows = load_kv_tile(
            k_cache_ptr, v_cache_ptr, block_tables_ptr + seq * stride_bt, k_scale_ptr, v_scale_ptr, n, n_mask,
            d, d_mask, kv_head, stride_cb, stride_cs, stride_ch, q.dtype, PAGE, INT8,
        )  # fmt: skip
        m, total, acc = attend_tile(
            q, k, v, k_rows, v_rows, n_mask[None, :], scale * k_scale, m, total, acc, DOT, INT8
        )
    empty = total == 0.0
    out = acc * (v_scale / tl.where(empty, 1.0, total))[:, None]
    mask = g_mask[:, None] & d_mask[None, :]
    if NUM_SPLITS == 1:
        tl.store(out_ptr + token * stride_ot + heads[:, None] * stride_oh + d[None, :], out, mask=mask)
    else:
        row = (token * GROUP * tl.num_programs(1) + heads) * NUM_SPLITS + split
        tl.store(part_out_ptr + row[:, None] * HEAD_DIM + d[None, :], out, mask=mask)
        lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, total)))
        tl.store(part_lse_ptr + row, lse, mask=g_mask)


@triton.jit(do_not_specialize=["seq_offset", "stride_bt"])
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_ptr, out_ptr,
    k_scale_ptr, v_scale_ptr, scale, seq_offset,
    stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr, INT8: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0) + seq_offset
    head = tl.program_id(1)
    tile = tl.program_id(2)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    cached = seq_len - q_len
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < q_len
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q = tl.load(
        q_ptr + (q_start + rows)[:, None] * stride_qt + head * stride_qh + d[None, :],
        mask=row_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    positions = cached + rows
    kv_head = head // GROUP
    q = mma_queries(q, FP8)
    k_scale, v_scale = kv_scales(k_scale_ptr, v_scale_ptr, FP8)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    end = tl.minimum(seq_len, cached + (tile + 1) * BLOCK_M)
    for n0 in range(0, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < end
        k, v, k_rows, v_rows = load_kv_tile(
            k_cache_ptr, v_cache_ptr, block_tables_ptr + seq * stride_bt, k_scale_ptr, v_scale_ptr, n, n_mask,
            d, d_mask, kv_head, stride_cb, stride_cs, stride_ch, q.dtype, PAGE, INT8,
        )  # fmt: skip
        visible = (n[None, :] <= positions[:, None]) & n_mask[None, :]
        m, total, acc = attend_tile(
            q, k, v, k_rows, v_rows, visible, scale * k_scale, m, total, acc, DOT, INT8
        )
    out = acc * (v_scale / tl.where(total == 0.0, 1.0, total))[:, None]
    tl.store(
        out_ptr + (q_start + rows)[:, None] * stride_ot + head * stride_oh + d[None, :],
        out,
        mask=row_mask[:, None] & d_mask[None, :],
    )


PREFILL_BLOCK_M = (16, 64)  # query rows per program: short chunks (decode-like), long prompts


def _scale_pointers(
    kv_scales: torch.Tensor | None, placeholder: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantized cache's k and v scales (fp8: [2]; int8: [2, blocks, page, kv_heads]); without them
    the kernels never read these, so any aligned tensor will do. Not a slice of a batch tensor: a
    one-sequence batch would make it empty (pointer 0, which Triton counts as aligned) and so select a
    different compiled variant than larger batches."""
    return (kv_scales[0], kv_scales[1]) if kv_scales is not None else (placeholder, placeholder)


def _dot_precision(q: torch.Tensor) -> str:
    """float32 models get exact float32 products (Triton would use TF32); 16-bit inputs ignore this."""
    return "ieee" if q.dtype == torch.float32 else "tf32"


@dataclass(frozen=True)
class DecodeTiling:
    """How the decode kernel walks a context: tokens per tile, warps per program, and how many tiles'
    loads are in flight at once (Triton's software pipelining of the loop)."""

    block_n: int
    num_warps: int
    stages: int


# 64-token tiles, two warps, three tiles' loads in flight: the best or within noise of it for bf16 and fp8
# caches at every context length bench/decode_attention.py measures on an H100.
DEFAULT_DECODE_TILING = DecodeTiling(block_n=64, num_warps=2, stages=3)


def decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    num_splits: int,
    kv_scales: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    tiling: DecodeTiling | None = None,
    query_start_loc: torch.Tensor | None = None,
    width: int = 1,
) -> torch.Tensor:
    """q: [tokens, heads, head_dim] -> [tokens, heads, head_dim]. Without `query_start_loc`, one token
    per sequence. With it, each sequence's newest tokens (rows query_start_loc[i]:[i + 1] of q, at most
    `width`, their K/V already in the cache and counted by `seq_lens`): each token attends exactly as
    the decode of that token would, bit for bit, whatever the other tokens of its step (a verify step's
    rows then round as its decode steps would, whichever proposals were accepted)."""
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = seq_lens.shape[0]
    _, _, page, num_kv_heads, _ = kv_cache.shape
    group = num_heads // num_kv_heads
    tiling = tiling or DEFAULT_DECODE_TILING
    out = torch.empty_like(q) if out is None else out
    if query_start_loc is None:
        assert width == 1 and num_tokens == num_seqs, "one token per sequence without query_start_loc"
        query_start_loc = torch.arange(num_seqs + 1, dtype=torch.int32, device=q.device)
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    part_out, part_lse = split_partials(out, num_splits)
    k_scale, v_scale = _scale_pointers(kv_scales, seq_lens)
    _decode_kernel[(num_seqs * width, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out, part_out, part_lse, k_scale,
        v_scale, scale, width, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1),
        k_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim), PAGE=page, BLOCK_N=tiling.block_n, NUM_SPLITS=num_splits,
        FP8=kv_cache.dtype == torch.float8_e4m3fn, INT8=kv_cache.dtype == torch.int8, DOT=_dot_precision(q),
        STAGES=tiling.stages,
        num_warps=tiling.num_warps,
    )  # fmt: skip
    merge_splits(part_out, part_lse, out, num_splits)
    return out


def prefill_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    scale: float,
    kv_scales: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    first_seq: int = 0,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens (rows query_start_loc[i]:[i+1] of q) over its
    cached context plus themselves, for sequences `first_seq` onwards. Passing the offset rather than
    sliced tensors keeps pointer alignment, and so the compiled kernel, the same for every batch."""
    num_seqs = seq_lens.shape[0] - first_seq
    _, num_heads, head_dim = q.shape
    _, _, page, num_kv_heads, _ = kv_cache.shape
    out = torch.empty_like(q) if out is None else out
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    block_m = PREFILL_BLOCK_M[0] if max_query_len <= 32 else PREFILL_BLOCK_M[1]
    k_scale, v_scale = _scale_pointers(kv_scales, seq_lens)
    grid = (num_seqs, num_heads, triton.cdiv(max_query_len, block_m))
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out, k_scale, v_scale, scale,
        first_seq, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        PAGE=page, BLOCK_M=block_m, BLOCK_N=64, FP8=kv_cache.dtype == torch.float8_e4m3fn,
        INT8=kv_cache.dtype == torch.int8, DOT=_dot_precision(q),
        num_warps=4, num_stages=2,
    )  # fmt: skip
    return out
