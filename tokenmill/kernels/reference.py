"""The PyTorch reference of every kernel: Hugging Face numerics, correct on any device.

This is the `torch` kernel backend, and the ground truth each Triton kernel is tested against.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from tokenmill.kernels.lora_mapping import LoRAMapping
from tokenmill.kernels.metadata import AttentionMetadata


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The residual stream is summed in the model dtype, normalised in float32.
    Returns (normed, x + residual)."""
    if residual is not None:
        x = x + residual
        residual = x
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype), residual


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up of the fused gate|up projection output."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def write_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_scales: torch.Tensor | None = None,
) -> None:
    """Store the new tokens' keys and values ([tokens, kv_heads, head_dim]) at their cache slots."""
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    if kv_scales is not None:
        k, v = k.float() / kv_scales[0], v.float() / kv_scales[1]
    kv_cache[0].view(-1, num_kv_heads, head_dim)[slot_mapping] = k.to(kv_cache.dtype)
    kv_cache[1].view(-1, num_kv_heads, head_dim)[slot_mapping] = v.to(kv_cache.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary embedding; cos/sin: [tokens, head_dim / 2], cast to x's dtype as HF does."""
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def norm_rope_and_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    kv_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-head q/k RMSNorm (Qwen3), rotary embedding and the KV-cache write, one step after another.
    Returns the rotated q ([tokens, heads, head_dim]); writes rotated k and v to the cache."""
    if qk_norm is not None:
        q_weight, k_weight, eps = qk_norm
        q, k = rms_norm(q, q_weight, eps)[0], rms_norm(k, k_weight, eps)[0]
    cos, sin = cos_table[positions], sin_table[positions]
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    write_kv_cache(k, v, kv_cache, slot_mapping, kv_scales)
    return q


def paged_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Causal attention of the new tokens `q` ([tokens, heads, head_dim]) over each sequence's cache.
    Decodes are batched with a length mask; each prefill chunk is attended on its own."""
    out = torch.empty_like(q)
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


def lora_shrink(x: torch.Tensor, lora_a: torch.Tensor, mapping: LoRAMapping) -> torch.Tensor:
    """h = x·Aᵀ under each token's slot: x [tokens, in], lora_a [slots, shards, rank, in] ->
    h [tokens, shards, rank] (zeros for tokens without an adapter). One matmul per slot present."""
    num_tokens, (_, shards, rank, _) = x.shape[0], lora_a.shape
    slots = mapping.token_slots[:num_tokens].long()
    h = torch.zeros(num_tokens, shards, rank, dtype=x.dtype, device=x.device)
    for slot in slots.unique().tolist():
        if slot >= 0:
            rows = (slots == slot).nonzero()[:, 0]
            h[rows] = (x[rows] @ lora_a[slot].flatten(0, 1).T).unflatten(1, (shards, rank))
    return h


def lora_expand(
    y: torch.Tensor, h: torch.Tensor, lora_b: torch.Tensor, out_shards: tuple[int, ...], mapping: LoRAMapping
) -> None:
    """y[:, shard s] += h[:, s]·B[:, shard s]ᵀ under each token's slot, in place: y [tokens, out],
    lora_b [slots, out, rank] (the adapter's scale folded in), out_shards the fused shards' widths."""
    slots = mapping.token_slots[: y.shape[0]].long()
    bounds = [0, *itertools.accumulate(out_shards)]
    for slot in slots.unique().tolist():
        if slot >= 0:
            rows = (slots == slot).nonzero()[:, 0]
            for shard, (begin, end) in enumerate(itertools.pairwise(bounds)):
                y[rows, begin:end] += h[rows, shard] @ lora_b[slot, begin:end].T
