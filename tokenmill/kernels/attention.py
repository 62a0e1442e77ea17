"""Attention over a paged KV cache: the interface every backend implements, and its PyTorch reference.

A step's batch is flattened: the new tokens of all sequences are concatenated, decodes first (one token
each), then prefill chunks. Each sequence's keys live in fixed-size blocks named by its block-table row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenmill.kernels import TRITON_AVAILABLE

if TRITON_AVAILABLE:
    from tokenmill.kernels.triton_attention import decode_attention, prefill_attention


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot (block * block_size + offset) of each new token
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, padded with 0
    seq_lens: torch.Tensor  # [num_seqs] context length after this step
    query_start_loc: torch.Tensor  # [num_seqs + 1] offsets of each sequence's tokens in the batch
    num_decodes: int  # the first `num_decodes` sequences contribute exactly one token
    seq_lens_cpu: list[int]
    query_lens_cpu: list[int]
    block_size: int
    max_query_len: int = 1
    triton: bool = False  # use the Triton kernels (CUDA); else the PyTorch reference below
    decode_splits: int = 1  # Triton decode: programs per sequence and KV head
    kv_scales: torch.Tensor | None = None  # [k_scale, v_scale] of an fp8 cache, else None


DECODE_SPLIT_CHOICES = (1, 2, 4, 8, 16, 32)  # each is a compiled variant of the decode kernel


def decode_splits(num_seqs: int, num_kv_heads: int, max_len: int, num_sms: int) -> int:
    """How many programs share one sequence's decode: enough to fill the GPU twice over, with no split
    shorter than 256 tokens, the largest of `DECODE_SPLIT_CHOICES` within both."""
    want = max(1, (2 * num_sms) // max(num_seqs * num_kv_heads, 1))
    cap = max(1, max_len // 256)
    return max(s for s in DECODE_SPLIT_CHOICES if s <= min(want, cap))


def paged_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Causal attention of the new tokens `q` ([tokens, heads, head_dim]) over each sequence's cache."""
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if meta.triton:
        if nd:
            decode_attention(
                q[:nd], kv_cache, meta.block_tables[:nd], meta.seq_lens[:nd], scale, meta.decode_splits,
                meta.kv_scales, out=out[:nd],
            )  # fmt: skip
        if nd < meta.block_tables.shape[0]:
            prefill_attention(
                q, kv_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, meta.max_query_len,
                scale, meta.kv_scales, out=out, first_seq=nd,
            )  # fmt: skip
        return out
    return paged_attention_reference(q, kv_cache, meta, scale, out)


def paged_attention_reference(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float, out: torch.Tensor
) -> torch.Tensor:
    """Decodes are batched with a length mask; each prefill chunk is attended on its own. Correct on
    any device; the Triton kernels are tested against it."""
    nd = meta.num_decodes
    if nd:
        out[:nd] = _decode_attention(q[:nd], kv_cache, meta, scale)
    starts = meta.query_start_loc.tolist() if nd < len(meta.seq_lens_cpu) else []
    for i in range(nd, len(meta.seq_lens_cpu)):
        seq_len, query_len = meta.seq_lens_cpu[i], meta.query_lens_cpu[i]
        begin = starts[i]
        keys, values = _gather_sequence(
            kv_cache, meta.block_tables[i], seq_len, meta.block_size, meta.kv_scales
        )
        query_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        mask = torch.arange(seq_len, device=q.device)[None, :] <= query_pos[:, None]
        chunk = q[begin : begin + query_len]
        out[begin : begin + query_len] = _sdpa(chunk[None], keys[None], values[None], mask[None], scale)[0]
    return out


def _decode_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    nd = q.shape[0]
    max_len = max(meta.seq_lens_cpu[:nd])
    max_blocks = -(-max_len // meta.block_size)
    blocks = meta.block_tables[:nd, :max_blocks].long()
    keys = _dequantize(kv_cache[0][blocks].flatten(1, 2)[:, :max_len], meta.kv_scales, 0)  # [nd, len, kvh, d]
    values = _dequantize(kv_cache[1][blocks].flatten(1, 2)[:, :max_len], meta.kv_scales, 1)
    mask = torch.arange(max_len, device=q.device)[None, :] < meta.seq_lens[:nd, None]
    return _sdpa(q[:, None], keys, values, mask[:, None, :], scale)[:, 0]


def _gather_sequence(
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_len: int,
    block_size: int,
    scales: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = block_table[: -(-seq_len // block_size)].long()
    keys = _dequantize(kv_cache[0][blocks].flatten(0, 1)[:seq_len], scales, 0)
    return keys, _dequantize(kv_cache[1][blocks].flatten(0, 1)[:seq_len], scales, 1)


def _dequantize(cached: torch.Tensor, scales: torch.Tensor | None, which: int) -> torch.Tensor:
    return cached if scales is None else cached.float() * scales[which]


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """[batch, q_len, heads, dim] x [batch, k_len, kv_heads, dim] -> [batch, q_len, heads, dim]."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2).to(q.dtype),
        v.transpose(1, 2).to(q.dtype),
        attn_mask=mask[:, None],
        scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)
