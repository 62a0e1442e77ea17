"""Attention over a paged KV cache: the interface every backend implements, and its PyTorch reference.

A step's batch is flattened: the new tokens of all sequences are concatenated, decodes first (one token
each), then prefill chunks. Each sequence's keys live in fixed-size blocks named by its block-table row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def write_kv_cache(
    k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Store the new tokens' keys and values ([tokens, kv_heads, head_dim]) at their cache slots."""
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    kv_cache[0].view(-1, num_kv_heads, head_dim)[slot_mapping] = k.to(kv_cache.dtype)
    kv_cache[1].view(-1, num_kv_heads, head_dim)[slot_mapping] = v.to(kv_cache.dtype)


def paged_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Causal attention of the new tokens `q` ([tokens, heads, head_dim]) over each sequence's cache.

    Reference implementation: decodes are batched with a length mask; each prefill chunk is attended
    on its own. Correct on any device; the Triton kernels are tested against it.
    """
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if nd:
        out[:nd] = _decode_attention(q[:nd], kv_cache, meta, scale)
    starts = meta.query_start_loc.tolist() if nd < len(meta.seq_lens_cpu) else []
    for i in range(nd, len(meta.seq_lens_cpu)):
        seq_len, query_len = meta.seq_lens_cpu[i], meta.query_lens_cpu[i]
        begin = starts[i]
        keys, values = _gather_sequence(kv_cache, meta.block_tables[i], seq_len, meta.block_size)
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
    keys = kv_cache[0][blocks].flatten(1, 2)[:, :max_len]  # [nd, max_len, kv_heads, head_dim]
    values = kv_cache[1][blocks].flatten(1, 2)[:, :max_len]
    mask = torch.arange(max_len, device=q.device)[None, :] < meta.seq_lens[:nd, None]
    return _sdpa(q[:, None], keys, values, mask[:, None, :], scale)[:, 0]


def _gather_sequence(
    kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = block_table[: -(-seq_len // block_size)].long()
    return kv_cache[0][blocks].flatten(0, 1)[:seq_len], kv_cache[1][blocks].flatten(0, 1)[:seq_len]


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
