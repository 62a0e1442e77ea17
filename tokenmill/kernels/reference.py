"""The PyTorch reference of every kernel: Hugging Face numerics, correct on any device.

This is the `torch` kernel backend, and the ground truth each Triton kernel is tested against (the LoRA
kernels' is in `lora_reference`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokenmill.kernels.fp8_rows import FP8_DTYPE, FP8_MAX, Fp8Rows, ScaledRows
from tokenmill.kernels.lora_mapping import LoRAExpand, LoRAWeights
from tokenmill.kernels.lora_reference import expanded, lora_delta
from tokenmill.kernels.metadata import AttentionMetadata


def quantize_token_groups(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic activation quantization, x [tokens, in] -> (float8_e4m3fn, float32 scales [tokens,
    ceil(in/group)]): each row's groups of `group` columns scaled so their largest magnitude maps to 448."""
    rows, cols = x.shape
    groups = -(-cols // group)
    padded = x.float().new_zeros(rows, groups * group)
    padded[:, :cols] = x.float()
    tiles = padded.view(rows, groups, group)
    scales = tiles.abs().amax(dim=2).clamp_min(torch.finfo(torch.float32).tiny) / FP8_MAX
    quantized = (tiles / scales[:, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return quantized.view(rows, groups * group)[:, :cols].contiguous(), scales


def quantize_rows(x: torch.Tensor) -> Fp8Rows:
    """x [tokens, in] quantized with one scale per row (a single group of the whole row)."""
    return Fp8Rows(*quantize_token_groups(x, x.shape[-1]), x.dtype)


def rms_norm(
    x: torch.Tensor | ScaledRows,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    lora: LoRAExpand | None = None,
    quantize: bool = False,
) -> tuple[torch.Tensor | Fp8Rows, torch.Tensor | None]:
    """The residual stream is summed in the model dtype, normalised in float32.
    Returns (normed, x + residual). `lora`: the pending expand of x's projection, added to x first.
    `quantize`: normed as `Fp8Rows` (the model-dtype rows quantized per token), for an fp8 GEMM.
    x as `ScaledRows`: its scales applied first (and no LoRA expand pending)."""
    if isinstance(x, ScaledRows):
        assert lora is None, "a LoRA-wrapped projection hands over scaled rows"
        x = x.resolve()
    if lora is not None:
        x = expanded(x, lora)
    if residual is not None:
        x = x + residual
        residual = x
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    normed = weight * h.to(dtype)
    return quantize_rows(normed) if quantize else normed, residual


def silu_and_mul(
    gate_up: torch.Tensor | ScaledRows, lora: LoRAExpand | None = None, quantize: bool = False
) -> torch.Tensor | Fp8Rows:
    """SiLU(gate) * up of the fused gate|up projection output (`lora`: its pending expand, added first;
    `quantize`: the product as `Fp8Rows`; gate_up as `ScaledRows`: its scales applied first)."""
    if isinstance(gate_up, ScaledRows):
        assert lora is None, "a LoRA-wrapped projection hands over scaled rows"
        gate_up = gate_up.resolve()
    if lora is not None:
        gate_up = expanded(gate_up, lora)
    gate, up = gate_up.chunk(2, dim=-1)
    out = F.silu(gate) * up
    return quantize_rows(out) if quantize else out


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    lora: LoRAWeights | None = None,
) -> torch.Tensor:
    """x Wᵀ (+ bias) (+ each row's LoRA delta), then + residual in x's dtype: a projection followed by
    the residual add."""
    y = F.linear(x, weight, bias)
    if lora is not None:
        lora_delta(y, x, lora)
    return y if residual is None else y + residual


def rms_norm_linear(
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    lora: LoRAWeights | None = None,
) -> torch.Tensor:
    """The projection of x's RMSNorm (the norm that opens each half of a decoder layer)."""
    return linear(rms_norm(x, norm_weight, eps)[0], weight, bias, None, lora)


def silu_mul_linear(
    gate_up: torch.Tensor,
    weight: torch.Tensor,
    residual: torch.Tensor | None = None,
    lora: LoRAWeights | None = None,
) -> torch.Tensor:
    """The down projection of SiLU(gate) * up, then + residual."""
    return linear(silu_and_mul(gate_up), weight, None, residual, lora)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties away from zero (what the Triton cache write does)."""
    return torch.where(x >= 0, torch.floor(x + 0.5), torch.ceil(x - 0.5))


def quantize_int8_heads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [tokens, kv_heads, head_dim] -> (int8 values, float32 scales [tokens, kv_heads]): one scale per
    token and head, its largest magnitude / 127 (an all-zero head gets scale 0 and zeros)."""
    x = x.float()
    amax = x.abs().amax(dim=-1)
    inverse = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    return round_half_away(x * inverse[..., None]).to(torch.int8), amax / 127.0


def write_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_scales: torch.Tensor | None = None,
) -> None:
    """Store the new tokens' keys and values ([tokens, kv_heads, head_dim]) at their cache slots: fp8
    divided by its per-tensor scales, int8 with the per-token, per-head scales written to `kv_scales`."""
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    for which, x in enumerate((k, v)):
        if kv_cache.dtype == torch.int8:
            assert kv_scales is not None, "an int8 cache has its scales beside it"
            x, scales = quantize_int8_heads(x)
            kv_scales[which].view(-1, num_kv_heads)[slot_mapping] = scales
        elif kv_scales is not None:
            x = x.float() / kv_scales[which]
        kv_cache[which].view(-1, num_kv_heads, head_dim)[slot_mapping] = x.to(kv_cache.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary embedding; cos/sin: [tokens, head_dim / 2], cast to x's dtype as HF does."""
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


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
    """Per-head q/k RMSNorm (Qwen3), rotary embedding and the KV-cache write, one step after another.
    Returns the rotated q ([tokens, heads, head_dim]); writes rotated k and v to the cache. q, k and v as
    `ScaledRows` (parts of an fp8 GEMM's output): their scales applied first."""
    q, k, v = (x.resolve() if isinstance(x, ScaledRows) else x for x in (q, k, v))
    if qk_norm is not None:
        q_weight, k_weight, eps = qk_norm
        q, k = rms_norm(q, q_weight, eps)[0], rms_norm(k, k_weight, eps)[0]
    cos, sin = cos_table[positions], sin_table[positions]
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    write_kv_cache(k, v, kv_cache, slot_mapping, kv_scales)
    return q


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    kv_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of the new tokens `q` ([tokens, heads, head_dim]) over each sequence's cache
    (fp8 or int8 with `kv_scales`). Decodes are batched with a length mask; each prefill chunk is
    attended on its own."""
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if nd:
        out[:nd] = _decode_attention(q[:nd], kv_cache, meta, scale, kv_scales)
    starts = meta.query_start_loc.tolist() if nd < len(meta.seq_lens_cpu) else []
    for i in range(nd, len(meta.seq_lens_cpu)):
        seq_len, query_len = meta.seq_lens_cpu[i], meta.query_lens_cpu[i]
        begin = starts[i]
        blocks = meta.block_tables[i, : -(-seq_len // meta.block_size)].long()
        keys, values = (
            _read_cache(kv_cache, kv_scales, which, blocks).flatten(0, 1)[:seq_len] for which in (0, 1)
        )
        query_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        mask = torch.arange(seq_len, device=q.device)[None, :] <= query_pos[:, None]
        chunk = q[begin : begin + query_len]
        out[begin : begin + query_len] = _sdpa(chunk[None], keys[None], values[None], mask[None], scale)[0]
    return out


def _decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    kv_scales: torch.Tensor | None,
) -> torch.Tensor:
    nd = q.shape[0]
    max_len = max(meta.seq_lens_cpu[:nd])
    max_blocks = -(-max_len // meta.block_size)
    blocks = meta.block_tables[:nd, :max_blocks].long()
    keys, values = (  # [nd, len, kvh, d]
        _read_cache(kv_cache, kv_scales, which, blocks).flatten(1, 2)[:, :max_len] for which in (0, 1)
    )
    mask = torch.arange(max_len, device=q.device)[None, :] < meta.seq_lens[:nd, None]
    return _sdpa(q[:, None], keys, values, mask[:, None, :], scale)[:, 0]


def _read_cache(
    kv_cache: torch.Tensor, kv_scales: torch.Tensor | None, which: int, blocks: torch.Tensor
) -> torch.Tensor:
    """Keys (which=0) or values of cache blocks `blocks` ([..., page, kv_heads, head_dim]), dequantized."""
    cached = kv_cache[which][blocks]
    if kv_scales is None:
        return cached
    if kv_cache.dtype == torch.int8:
        return cached.float() * kv_scales[which][blocks][..., None]
    return cached.float() * kv_scales[which]


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


def all_reduce_in_rank_order(parts: list[torch.Tensor]) -> torch.Tensor:
    """The ranks' tensors summed in float32 in rank order, rounded once to their dtype: what every rank
    of the low-latency all-reduce computes, so all of them hold the same bits."""
    total = torch.zeros_like(parts[0], dtype=torch.float32)
    for part in parts:
        total += part.float()
    return total.to(parts[0].dtype)
