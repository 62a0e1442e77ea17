"""RMSNorm with the residual add fused in: one read of each input, one write of each output
(reference: `reference.rms_norm`).

After a LoRA-wrapped o or down projection the norm also adds the rows' LoRA deltas to x as it loads it
(`LoRAExpand`), in place of an expand launch of its own. A program holds one whole row (the norm needs
it), so it takes the delta on the CUDA cores from the rank-major copy of B (`b_by_rank`): one contiguous
row of B per rank, its adapter's (H200, Qwen3-0.6B's 1,024-wide rows at 358 tokens, alone: 3.4 us against
4.6 for expand + norm, 4.3 in a decode step; reading the row-major B, 32-byte pieces of every row, 9.4).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.fp8_rows import FP8_DTYPE, Fp8Rows, ScaledRows
from tokenmill.kernels.lora_mapping import LoRAExpand
from tokenmill.kernels.triton.fp8_quant import apply_scales, quantize_groups
from tokenmill.kernels.triton.lora import h_strides, lora_expand


@triton.jit
def _row_delta(
    x, row, cols, n_cols, h_ptr, b_ptr, slots_ptr, ranks_ptr, stride_h, stride_h_slot, stride_b_slot,
    stride_b_rank, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """x + its row's delta h·Bᵀ under the row's slot, rounded to x's dtype as the expand stores it (x
    itself where the row has no adapter)."""
    slot = tl.load(slots_ptr + row)
    rank = tl.load(ranks_ptr + tl.maximum(slot, 0), mask=slot >= 0, other=0)
    if rank > 0:
        h_row = h_ptr + row.to(tl.int64) * stride_h + slot * stride_h_slot
        b_rows = b_ptr + slot.to(tl.int64) * stride_b_slot + cols
        delta = tl.zeros(cols.shape, tl.float32)
        for r in tl.static_range(BLOCK_R):  # unrolled: every row of B in flight together
            h_r = tl.load(h_row + r, mask=r < rank, other=0.0).to(b_ptr.dtype.element_ty).to(tl.float32)
            # (one comparison: the interpreter rejects a block mask & a scalar one)
            b_r = tl.load(b_rows + r * stride_b_rank, mask=cols < tl.where(r < rank, n_cols, 0), other=0.0)
            delta += h_r * b_r.to(tl.float32)
        x = (x.to(tl.float32) + delta).to(x.dtype)
    return x


@triton.jit
def _add_rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr, scale_ptr, x_row_scale_ptr, x_col_scale_ptr,
    stride_x, stride_r, stride_o, n_cols, eps, h_ptr, b_ptr, slots_ptr, ranks_ptr, stride_h, stride_h_slot,
    stride_b_slot, stride_b_rank, HAS_RESIDUAL: tl.constexpr, HAS_LORA: tl.constexpr, SCALED: tl.constexpr,
    QUANTIZE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if SCALED:
        x = apply_scales(x, x_row_scale_ptr, x_col_scale_ptr, row, cols, mask)
    if HAS_LORA:
        x = _row_delta(
            x, row, cols, n_cols, h_ptr, b_ptr, slots_ptr, ranks_ptr, stride_h, stride_h_slot, stride_b_slot,
            stride_b_rank, BLOCK_R,
        )  # fmt: skip
    if HAS_RESIDUAL:
        x = x + tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        tl.store(residual_out_ptr + row * stride_r + cols, x, mask=mask)
    h = x.to(tl.float32)
    h = h * tl.rsqrt(tl.sum(h * h, 0) / n_cols + eps)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    normed = weight * h.to(x.dtype)
    if QUANTIZE:
        normed, scale = quantize_groups(normed, 0)
        tl.store(scale_ptr + row + tl.arange(0, 1), scale)
    tl.store(out_ptr + row * stride_o + cols, normed, mask=mask)


def _adds_by_row(lora: LoRAExpand) -> bool:
    """Whether the norm adds `lora` itself: a rank-major B (a single-shard projection up to
    ROW_DELTA_MAX_RANK keeps one), and h in one part (a stacked GEMM's, or a shrink's that was not split);
    else the expand runs first, as its own launch."""
    return lora.b_by_rank is not None and lora.h.shape[0] == 1


def rms_norm(
    x: torch.Tensor | ScaledRows,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    lora: LoRAExpand | None = None,
    quantize: bool = False,
) -> tuple[torch.Tensor | Fp8Rows, torch.Tensor | None]:
    """x (and residual): [rows, hidden]. Returns (normed, x + residual); the residual is updated in place.
    `lora`: the pending expand of the projection x came from, added to x first (to x in place, where the
    expand runs as its own launch). `quantize`: normed as `Fp8Rows` (the model-dtype rows quantized per
    row, as `fp8_quant.quantize_token_groups` would quantize them; compiled, the row's sum of squares may
    be added in another order than the unquantized variant's, so an element can land an e4m3 step away).
    x as `ScaledRows` (an fp8 GEMM's output): its scales applied as it is loaded."""
    scaled = x if isinstance(x, ScaledRows) else None
    if scaled is not None:
        assert lora is None, "a LoRA-wrapped projection hands over scaled rows"
        x = scaled.values
    if lora is not None and not _adds_by_row(lora):
        lora.add_to(x, lora_expand)
        lora = None
    rows, n_cols = x.shape
    out = torch.empty(rows, n_cols, dtype=FP8_DTYPE if quantize else x.dtype, device=x.device)
    scales = torch.empty(rows, 1, dtype=torch.float32, device=x.device) if quantize else x
    stream = residual if residual is not None else x  # a placeholder without residual
    _add_rms_norm_kernel[(rows,)](
        x, stream, weight, out.view(torch.uint8) if quantize else out, stream, scales,
        *((scaled.row_scales, scaled.col_scales) if scaled is not None else (x, x)), x.stride(0),
        stream.stride(0), out.stride(0), n_cols, eps, *_row_delta_operands(lora, x),
        HAS_RESIDUAL=residual is not None, HAS_LORA=lora is not None, SCALED=scaled is not None,
        QUANTIZE=quantize,
        BLOCK=triton.next_power_of_2(n_cols),
        BLOCK_R=triton.next_power_of_2(lora.b.shape[-1]) if lora is not None else 1,
        num_warps=4 if n_cols <= 2048 else 8,
    )  # fmt: skip
    return Fp8Rows(out, scales, x.dtype) if quantize else out, residual


def _row_delta_operands(
    lora: LoRAExpand | None, placeholder: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int, int]:
    """h, rank-major B, token slots, ranks and the strides `_row_delta` reads (placeholders without LoRA:
    HAS_LORA compiles them out)."""
    if lora is None:
        return placeholder, placeholder, placeholder, placeholder, 0, 0, 0, 0
    h, b = lora.h, lora.b_by_rank
    assert b is not None and len(lora.out_shards) == 1
    _, token_stride, slot_stride, _ = h_strides(h)
    return h, b, lora.mapping.token_slots, lora.ranks, token_stride, slot_stride, b.stride(0), b.stride(1)
