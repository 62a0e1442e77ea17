"""SiLU(gate) * up in one pass over the fused gate|up projection output
(reference: `reference.silu_and_mul`).

After a LoRA-wrapped gate|up the pass also adds the tokens' LoRA deltas to gate and up as it loads them
(`LoRAExpand`), in place of an expand launch of its own. Its programs then take tiles of TILE_TOKENS
tokens in the mapping's slot order, so a tile's tokens run under few adapters (usually one), and each
adapter present multiplies its rows by its B on the tensor cores, as the expand does.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.fp8_rows import Fp8Rows, ScaledRows
from tokenmill.kernels.lora_mapping import TILE_TOKENS, LoRAExpand
from tokenmill.kernels.triton.fp8_quant import apply_scales, quantize_token_groups
from tokenmill.kernels.triton.lora import (
    WIDE_TILE_MAX_RANK,
    expand_operands,
    lora_expand,
    precision,
    rank_block,
    tile_delta,
)

_BLOCK = 1024
# `quantize` runs this kernel, then the per-row quantization kernel. Fused, the row's largest magnitude
# needs the whole row in one program: 358 such programs at Qwen3-4B's width (9,728) took 15.2 us a
# launch in one pass (32 warps) and 19.3 in two passes of 2,048 columns (4 warps), against 10.7 for the
# two launches (H100, bench/results/s14-fp8 calls D and E).

# The LoRA variant's tiles: 16 tokens x 128 columns of gate and of up, 4 warps (H200, qa-358 at rank 16:
# 5.7 us a launch, against 6.3-7.7 at 64 or 256 columns or 8 warps; the expand + SiLU-and-mul it
# replaces took 8.7). sm_120 spills at 4 warps (96 registers a thread), so it takes 8 there. The loop
# over a tile's slots is a `for` (a `while`, or skipping absent slots with an `if`, took 7 us: more
# registers a thread).
_LORA_BLOCK_N = 128
_LORA_MAX_PARTS = 4


def lora_warps(capability: int) -> int:
    """Warps of a LoRA SiLU-and-mul program on an sm_<capability> GPU (90 for sm_90)."""
    return 8 if capability >= 120 else 4


@functools.cache
def _capability(device: torch.device) -> int:
    if device.type != "cuda":
        return 0  # Triton's interpreter
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


@triton.jit
def _gate_and_up(
    in_ptr, row_scale_ptr, col_scale_ptr, row, cols, mask, stride_in, width, SCALED: tl.constexpr
):  # fmt: skip
    """A row's gate and up columns `cols` in float32; SCALED: gate|up is a GEMM's output before its
    scales (`ScaledRows`), applied here."""
    gate = tl.load(in_ptr + row * stride_in + cols, mask=mask, other=0.0)
    up = tl.load(in_ptr + row * stride_in + width + cols, mask=mask, other=0.0)
    if SCALED:
        gate = apply_scales(gate, row_scale_ptr, col_scale_ptr, row, cols, mask)
        up = apply_scales(up, row_scale_ptr, col_scale_ptr + width, row, cols, mask)
    return gate.to(tl.float32), up.to(tl.float32)


@triton.jit
def _silu_and_mul_kernel(
    in_ptr, out_ptr, row_scale_ptr, col_scale_ptr, stride_in, stride_out, width, SCALED: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # rows * stride may pass 2**31 (80,000 tokens at width 14,336)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < width
    gate, up = _gate_and_up(in_ptr, row_scale_ptr, col_scale_ptr, row, cols, mask, stride_in, width, SCALED)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _lora_silu_and_mul_kernel(
    in_ptr, out_ptr, stride_in, stride_out, width, num_tokens,
    h, b, ranks, token_slots, sorted_tokens, splits, stride_h_split, stride_h, stride_h_slot, stride_h_shard,
    stride_b_slot, stride_b_row,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    start = tl.program_id(0) * BLOCK_M
    offs = start + tl.arange(0, BLOCK_M)
    valid = offs < num_tokens
    tokens = tl.load(sorted_tokens + offs, mask=valid, other=0).to(tl.int64)
    slots = tl.load(token_slots + tokens, mask=valid, other=-1)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < width
    mask = valid[:, None] & col_mask[None, :]
    ptrs = in_ptr + tokens[:, None] * stride_in + cols[None, :]
    gate = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(ptrs + width, mask=mask, other=0.0).to(tl.float32)
    # slots ascend along the tile: its first and last tokens' bound the slots it holds
    first = tl.maximum(tl.load(token_slots + tl.load(sorted_tokens + start)), 0)
    last = tl.load(token_slots + tl.load(sorted_tokens + tl.minimum(start + BLOCK_M, num_tokens) - 1))
    for slot in range(first, last + 1):  # where: other rows take nothing of this slot, not even 0·B
        rows = valid & (slots == slot)
        gate += tl.where(rows[:, None], tile_delta(
            h, b, ranks, tokens, rows, slot, 0, 0, cols, col_mask, 2, splits,
            stride_h_split, stride_h, stride_h_slot, stride_h_shard, stride_b_slot, stride_b_row,
            BLOCK_R, BLOCK_S, PRECISION,
        ), 0.0)  # fmt: skip
        up += tl.where(rows[:, None], tile_delta(
            h, b, ranks, tokens, rows, slot, 1, width, cols, col_mask, 2, splits,
            stride_h_split, stride_h, stride_h_slot, stride_h_shard, stride_b_slot, stride_b_row,
            BLOCK_R, BLOCK_S, PRECISION,
        ), 0.0)  # fmt: skip
    dtype = out_ptr.dtype.element_ty
    gate = gate.to(dtype).to(tl.float32)  # y + delta rounded to the model dtype, as the expand stores it
    up = up.to(dtype).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + tokens[:, None] * stride_out + cols[None, :], out.to(dtype), mask=mask)


def silu_and_mul(
    gate_up: torch.Tensor | ScaledRows, lora: LoRAExpand | None = None, quantize: bool = False
) -> torch.Tensor | Fp8Rows:
    """[rows, 2 * width] gate|up -> [rows, width]; `lora`: the pending expand of the gate|up projection.
    Above rank 32, or with h in more than 4 parts (a shrink's split K, a few tokens over a quantized or
    sharded base), the expand runs first, on gate_up in place, as its own launch: the fused tiles would
    spill on sm_120 (the expand narrows its tiles there). `quantize`: the product as `Fp8Rows`, quantized
    per row by a second launch. gate_up as `ScaledRows` (an fp8 GEMM's output): its scales applied as it
    is loaded."""
    scaled = gate_up if isinstance(gate_up, ScaledRows) else None
    if scaled is not None:
        assert lora is None, "a LoRA-wrapped projection hands over scaled rows"
        gate_up = scaled.values
    scale_operands = (scaled.row_scales, scaled.col_scales) if scaled is not None else (gate_up, gate_up)
    rows, double = gate_up.shape
    width = double // 2
    if quantize:  # two launches: see the note on quantizing above `_silu_and_mul_kernel`
        product = silu_and_mul(gate_up if scaled is None else scaled, lora)
        return Fp8Rows(*quantize_token_groups(product, width), product.dtype)
    out = torch.empty(rows, width, dtype=gate_up.dtype, device=gate_up.device)
    if lora is not None:
        assert lora.out_shards == (width, width), "gate|up's expand: two shards, gate's and up's"
        if rank_block(lora.b.shape[-1]) > WIDE_TILE_MAX_RANK or lora.h.shape[0] > _LORA_MAX_PARTS:
            lora.add_to(gate_up, lora_expand)
            lora = None
    if lora is None:
        _silu_and_mul_kernel[(rows, triton.cdiv(width, _BLOCK))](
            gate_up, out, *scale_operands, gate_up.stride(0), out.stride(0), width, SCALED=scaled is not None,
            BLOCK=_BLOCK, num_warps=4,
        )  # fmt: skip
        return out
    lora_args, lora_blocks = expand_operands(lora)
    grid = (triton.cdiv(rows, TILE_TOKENS), triton.cdiv(width, _LORA_BLOCK_N))
    _lora_silu_and_mul_kernel[grid](
        gate_up, out, gate_up.stride(0), out.stride(0), width, rows, *lora_args,
        BLOCK_M=TILE_TOKENS, BLOCK_N=_LORA_BLOCK_N, PRECISION=precision(gate_up.dtype),
        num_warps=lora_warps(_capability(gate_up.device)),
        **lora_blocks,
    )  # fmt: skip
    return out
