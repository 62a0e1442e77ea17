"""Quantized GEMVs for decode (one to a few tokens): y = x W^T with W read in its stored form and
dequantized in registers on the CUDA cores, so a decode step reads only the quantized bytes.

The shape follows the bf16 GEMV of `skinny_gemm` (its one-token path): each program owns BLOCK_N output
columns of one token row and streams its weight tile through fp32 registers; narrow tiles, not split K,
fill the SMs, so there are no partial sums and no reduction kernel, and each output is one program's
fixed-order sum (the same run after run, independent of the other rows). A batch of a few tokens runs one
program per (tile, row), the programs of a tile adjacent so that their weight reads meet in L2.

- `_byte_gemv_kernel`: one value per byte, stored [out, in] (int8 or fp8-e4m3), so a program reads
  BLOCK_N contiguous rows. Per-channel scales multiply the finished sums; fp8 block scales ([out/bo,
  in/bi], the weight only: activations stay unquantized) multiply each bi-column chunk.
- `_packed_gemv_kernel`: AWQ and GPTQ (4 or 8 bits) in their stored layouts (see `weight_only_gemm`),
  one chunk of CHUNK input rows at a time, several chunks per K step (unrolled) to keep about
  PACKED_TILE_BYTES of words in flight. The zero point is folded into the integer-to-float offset and
  the scale into the activation (x * scale, then one FMA per weight); where a chunk lies inside one
  group (groups in row order) both are read once per chunk and output, act-order groups per weight.
  The accumulator keeps one partial per (chunk row, output), summed once at the end: a sum across
  warps inside the loop would put a barrier between the chunks' loads.
The references are the quantization methods' `apply` (x times the `dequantize_*` weight).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.packed_int import OFFSET, offset_float
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile
from tokenmill.kernels.triton.weight_only_gemm import (
    FP8_BITS_UNIT,
    INT8,
    PackedWeight,
    WeightFormat,
    e4m3_bits_to_half,
    packed_values,
    zeros_and_scales,
)

BYTE_TILE_BYTES = 16384  # weight bytes per program per K step of the byte kernel (skinny_gemm's 16 KB)
BYTE_CHUNK_ELEMENTS = 8192  # the byte kernel's accumulator (its K step is two such chunks)
PACKED_TILE_BYTES = 8192  # packed weight bytes per program per K step (its chunks unrolled)
MAX_CHUNK = 128  # input rows per packed chunk: a group of up to 128 rows, or a part of a larger one
MAX_CHUNKS = 16
ACT_ORDER_CHUNK = 32  # chunk of rows whose groups are read per row (act-order, or groups of odd sizes)


@triton.jit
def _tile_and_row(rows):
    """(output tile, token row) of this program: the rows of one tile are adjacent programs."""
    pid = tl.program_id(0)
    return pid // rows, pid % rows


@triton.jit
def _decode_bytes(stored, FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr):
    """int8 or e4m3 bytes -> float32 (e4m3 without fp8 conversions: the value times 2^-8)."""
    if FORMAT == INT8:  # int8 + 128 OR-ed into float32 2^23's mantissa: no int -> float instruction
        values = offset_float(stored.to(tl.int32) + 128) - (OFFSET + 128.0)
    elif NATIVE_FP8:
        values = stored.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    else:
        values = e4m3_bits_to_half(stored).to(tl.float32)
    return values


@triton.jit(do_not_specialize=["rows"])
def _byte_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, rows, N, K, stride_x, stride_w, stride_s, stride_o,
    FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr, BLOCK_OUT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """BLOCK_OUT 0: one scale per output row. Else fp8 blocks of BLOCK_OUT rows and
    CHUNK columns, each chunk's [BLOCK_N] scales applied to its weights (clamped to the last block
    column where a chunk starts past K: its activations are masked to zero there)."""
    tile, row = _tile_and_row(rows)
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    acc = tl.zeros([BLOCK_N, CHUNK], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            k = k0 + c * CHUNK + tl.arange(0, CHUNK)
            k_mask = k < K
            x = tl.load(x_row + k, mask=k_mask, other=0.0).to(tl.float32)
            stored = tl.load(
                w_ptr + n[:, None] * stride_w + k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0
            )
            w = _decode_bytes(stored, FORMAT, NATIVE_FP8)
            if BLOCK_OUT > 0:
                block_column = tl.minimum(k0 + c * CHUNK, K - 1) // CHUNK
                scale = tl.load(
                    scale_ptr + (n // BLOCK_OUT) * stride_s + block_column, mask=n_mask, other=0.0
                )
                w = w * scale[:, None]
            acc += w * x[None, :]
    y = tl.sum(acc, 1)
    if BLOCK_OUT == 0:
        y = y * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    if FORMAT != INT8 and not NATIVE_FP8:
        y = y * FP8_BITS_UNIT
    tl.store(out_ptr + row * stride_o + n, y.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit(do_not_specialize=["rows"])
def _packed_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, g_idx_ptr, out_ptr, rows, N, K,
    stride_x, stride_wk, stride_sg, stride_zg, stride_o,
    FORMAT: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr, ONE_GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """ONE_GROUP: every CHUNK rows lie in one group (read at the chunk's first row, clamped to K - 1
    where a chunk starts past K: its activations are masked to zero there)."""
    tile, row = _tile_and_row(rows)
    n0 = tile * BLOCK_N
    n = n0 + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    acc = tl.zeros([CHUNK, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            start = k0 + c * CHUNK
            k = start + tl.arange(0, CHUNK)
            x = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)[:, None]
            zeros, scales = zeros_and_scales(
                zero_ptr, scale_ptr, g_idx_ptr, tl.minimum(start, K - 1) if ONE_GROUP else start, n, K, N,
                stride_sg, stride_zg, FORMAT, BITS, GROUP, ONE_GROUP, CHUNK,
            )  # fmt: skip
            values = packed_values(w_ptr, start, n0, K, N, stride_wk, FORMAT, BITS, CHUNK, BLOCK_N)
            acc += (offset_float(values) - (OFFSET + zeros)) * (x * scales)  # (q - zero) * scale * x
    out = out_ptr + row * stride_o + n
    tl.store(out, tl.sum(acc, 0).to(out_ptr.dtype.element_ty), mask=n < N)


@functools.cache
def native_fp8(device: torch.device) -> bool:
    """fp8 -> float conversion instructions: sm_89+ (and Triton's interpreter); elsewhere bit decoding."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 9)


def _byte_gemv(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, is_int8: bool, block: tuple[int, int] | None
) -> torch.Tensor:
    rows, k = x.shape
    n = weight.shape[0]
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    block_n = widest_covering_tile(n, 1, 16, num_sms(x.device))
    block_k = min(triton.next_power_of_2(k), BYTE_TILE_BYTES // block_n)
    chunk = min(block_k, BYTE_CHUNK_ELEMENTS // block_n) if block is None else block[1]
    block_k = max(block_k, chunk) // chunk * chunk
    weight_format = WeightFormat.INT8 if is_int8 else WeightFormat.FP8
    _byte_gemv_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, weight.view(torch.uint8) if not is_int8 else weight, scales, out, rows, n, k,
        x.stride(0), weight.stride(0), scales.stride(0) if block else 0, out.stride(0),
        FORMAT=int(weight_format), NATIVE_FP8=native_fp8(x.device), BLOCK_OUT=block[0] if block else 0,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=chunk, num_warps=8 if block_n * chunk >= 8192 else 4,
    )  # fmt: skip
    return out


def fp8_block_gemv(
    x: torch.Tensor, weight: torch.Tensor, weight_scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """x [tokens, in] times an e4m3 weight [out, in] with block scales -> [tokens, out] in x's dtype.
    block[1] (the block's input columns) must be a power of two of at least 16."""
    return _byte_gemv(_rows(x), weight, weight_scale_inv, False, block)


def packed_chunk(weight: PackedWeight) -> tuple[int, bool]:
    """(CHUNK, ONE_GROUP): the largest power-of-two divisor of the group (at most MAX_CHUNK) where groups
    follow the row order and that divisor is at least 16; else ACT_ORDER_CHUNK rows, groups per row."""
    in_row_order = weight.format == WeightFormat.AWQ or weight.groups_in_row_order
    chunk = min(MAX_CHUNK, weight.group_size & -weight.group_size)
    return (chunk, True) if in_row_order and chunk >= 16 else (ACT_ORDER_CHUNK, False)


def gemv(x: torch.Tensor, weight: PackedWeight) -> torch.Tensor:
    """x [tokens, in] -> [tokens, out] in x's dtype, for any `PackedWeight` format."""
    x = _rows(x)
    if weight.format < WeightFormat.AWQ:
        return _byte_gemv(x, weight.weight, weight.scales, weight.format == WeightFormat.INT8, None)
    rows, k = x.shape
    n = weight.out_features
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    chunk, one_group = packed_chunk(weight)
    is_awq = weight.format == WeightFormat.AWQ
    # AWQ packs eight columns per word: 64 columns make each row of words one 32-byte sector
    block_n = widest_covering_tile(n, 64 if is_awq else 16, 128 if is_awq else 64, num_sms(x.device))
    chunks = PACKED_TILE_BYTES * 8 // (weight.bits * block_n * chunk)
    chunks = max(1, min(chunks, MAX_CHUNKS, triton.cdiv(k, chunk)))
    _, _, stride_sg, stride_zg = weight.strides()
    _packed_gemv_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, *weight.pointers(), out, rows, n, k, x.stride(0), weight.weight.stride(0), stride_sg, stride_zg,
        out.stride(0), FORMAT=int(weight.format), BITS=weight.bits, GROUP=weight.group_size,
        ONE_GROUP=one_group, BLOCK_N=block_n, BLOCK_K=chunks * chunk, CHUNK=chunk,
        num_warps=8 if chunk * block_n >= 8192 else 4,
    )  # fmt: skip
    return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()
