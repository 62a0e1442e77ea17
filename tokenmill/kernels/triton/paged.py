"""How a step's batch drives the two attention kernels: decodes, verify chunks and prefill chunks
dispatched, the decode split count chosen from a fixed set, and every variant those choices can select
compiled at start-up."""

from __future__ import annotations

import torch
import triton

from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.triton.attention import PREFILL_BLOCK_M, decode_attention, prefill_attention


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    kv_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """A step's mixed batch. A step of decodes and verify chunks runs every token through the decode
    kernel (a verify row then rounds as the decode of its token, whichever proposals its step
    verifies); otherwise the decodes run through it and the chunks through the prefill kernel."""
    out = torch.empty_like(q)
    if meta.attends_as_decodes:
        return decode_attention(
            q, kv_cache, meta.block_tables, meta.seq_lens, scale, meta.decode_splits, kv_scales, out=out,
            query_start_loc=meta.query_start_loc, width=meta.max_query_len,
        )  # fmt: skip
    nd = meta.num_decodes
    if nd:
        decode_attention(
            q[:nd], kv_cache, meta.block_tables[:nd], meta.seq_lens[:nd], scale, meta.decode_splits,
            kv_scales, out=out[:nd], query_start_loc=meta.query_start_loc[: nd + 1],
        )  # fmt: skip
    prefill_attention(
        q, kv_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, meta.max_query_len,
        scale, kv_scales, out=out, first_seq=nd,
    )  # fmt: skip
    return out


DECODE_SPLIT_CHOICES = (1, 2, 4, 8, 16, 32)  # each is a compiled variant of the decode kernel


def decode_splits(num_seqs: int, num_kv_heads: int, max_len: int, num_sms: int) -> int:
    """How many programs share one sequence's decode: enough to fill the GPU twice over, with no split
    shorter than 256 tokens, the largest of `DECODE_SPLIT_CHOICES` within both."""
    want = max(1, (2 * num_sms) // max(num_seqs * num_kv_heads, 1))
    cap = max(1, max_len // 256)
    return max(s for s in DECODE_SPLIT_CHOICES if s <= min(want, cap))


def compile_variants(
    kv_cache: torch.Tensor,
    num_heads: int,
    dtype: torch.dtype,
    null_block: int,
    kv_scales: torch.Tensor | None = None,
) -> None:
    """Launch every variant a batch can select (each decode split count, each prefill tile height)
    over the scratch block `null_block`, so that none compiles while serving. With the batch-dependent
    integers unspecialised, these constexprs are all that tell a model's variants apart."""
    page, head_dim, device = kv_cache.shape[2], kv_cache.shape[-1], kv_cache.device
    longest = max(PREFILL_BLOCK_M)  # a query of BLOCK_M rows selects that tile height
    tables = torch.full((1, triton.cdiv(longest, page)), null_block, dtype=torch.int32, device=device)
    q = torch.zeros(longest, num_heads, head_dim, dtype=dtype, device=device)
    one = torch.ones(1, dtype=torch.int32, device=device)
    for splits in DECODE_SPLIT_CHOICES:
        decode_attention(q[:1], kv_cache, tables, one, 1.0, splits, kv_scales)
    for rows in PREFILL_BLOCK_M:
        starts = torch.tensor([0, rows], dtype=torch.int32, device=device)
        prefill_attention(q[:rows], kv_cache, tables, one * rows, starts, rows, 1.0, kv_scales)
