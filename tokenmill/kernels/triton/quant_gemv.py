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
- `_packed_gemv_kernel`: GPTQ's layout (4 or 8 bits; AWQ repacked into it at load, see `weight_formats`),
  one chunk of CHUNK input rows at a time, several chunks per K step (unrolled) to keep about
  PACKED_TILE_BYTES of words in flight. The zero point is folded into the integer-to-float offset and
  the scale into the activation (x * scale, then one FMA per weight); where a chunk lies inside one
  group (groups in row order) both are read once per chunk and output, act-order groups per weight.
  The accumulator keeps one partial per (chunk row, output), summed once at the end: a sum across
  warps inside the loop would put a barrier between the chunks' loads.
4-bit weights whose groups are multiples of 128 rows in row order go to `int4_mma` instead (tensor
cores: 16-bit activations, sm_80+, up to 16 rows) or else `int4_gemv` (bf16x2 arithmetic, split K), and
e4m3 weights with per-channel scales to `fp8_gemv` (int32 words, loads a K step ahead, split K) where
their rows read as int32 words; the byte kernel keeps the rest (int8, fp8 block scales, the shapes a
sweep names). Both kernels here take the fused small-batch path's element-wise neighbours
(`gemv_fusion.Fusion`): the RMSNorm or SiLU-and-mul prologue, the bias and the residual epilogue. The
references are the quantization methods' `apply` (x times the `dequantize_*` weight), with the unfused
norm, activation and add around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import fp8_gemv, int4_gemv, int4_mma
from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION, Fusion, row_inputs, row_rstd, store_row
from tokenmill.kernels.triton.packed_int import OFFSET, offset_float
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile
from tokenmill.kernels.triton.weight_formats import (
    FP8_BITS_UNIT,
    INT8,
    PackedWeight,
    WeightFormat,
    decode_bytes,
    packed_values,
    zeros_and_scales,
)

# weight bytes per program per K step of the byte kernel (16 KB: 12% slower, H100), held in registers:
# staging them through shared memory with Triton's loop pipeliner (tl.range num_stages) was 15-30% slower
BYTE_TILE_BYTES = 32768
BYTE_CHUNK_ELEMENTS = 8192  # the byte kernel's accumulator (a K step of its default shape is four)
PACKED_TILE_BYTES = 8192  # packed weight bytes per program per K step (its chunks unrolled)
MAX_CHUNK = 128  # input rows per packed chunk: a group of up to 128 rows, or a part of a larger one
MAX_CHUNKS = 16
ACT_ORDER_CHUNK = 32  # chunk of rows whose groups are read per row (act-order, or groups of odd sizes)


@dataclass(frozen=True)
class GemvShape:
    """One launch shape: BLOCK_N outputs per program, about `tile_bytes` weight bytes per program per K
    step (`bench/quant_gemv_hbm.py --sweep` times others than `default_shape`)."""

    block_n: int
    tile_bytes: int


def default_shape(packed: bool, n: int, device: torch.device) -> GemvShape:
    """The widest tile (32 outputs for bytes, 64 for packed words) whose tiles still cover every SM."""
    if packed:
        return GemvShape(widest_covering_tile(n, 16, 64, num_sms(device)), PACKED_TILE_BYTES)
    return GemvShape(widest_covering_tile(n, 1, 32, num_sms(device)), BYTE_TILE_BYTES)


@triton.jit
def _tile_and_row(rows):
    """(output tile, token row) of this program: the rows of one tile are adjacent programs."""
    pid = tl.program_id(0)
    return pid // rows, pid % rows


@triton.jit(do_not_specialize=["rows"])
def _byte_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, N, K,
    stride_x, stride_w, stride_s, stride_o, stride_r, eps,
    FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr, BLOCK_OUT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):  # fmt: skip
    """BLOCK_OUT 0: one scale per output row. Else fp8 blocks of BLOCK_OUT rows and
    CHUNK columns, each chunk's [BLOCK_N] scales applied to its weights (clamped to the last block
    column where a chunk starts past K: its activations are masked to zero there). Splitting K as
    `int4_gemv` does made these slower (H100: the RMSNorm prologue repeated per split, 1-2 K steps each)."""
    tile, row = _tile_and_row(rows)
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([BLOCK_N, CHUNK], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            k = k0 + c * CHUNK + tl.arange(0, CHUNK)
            x = row_inputs(x_row, k, K, norm_weight_ptr, x_row, rstd, PROLOGUE, False)
            stored = tl.load(
                w_ptr + n[:, None] * stride_w + k[None, :], mask=n_mask[:, None] & (k < K)[None, :], other=0
            )
            w = decode_bytes(stored, FORMAT, NATIVE_FP8)
            if BLOCK_OUT > 0:
                block_column = tl.minimum(k0 + c * CHUNK, K - 1) // CHUNK
                scale = tl.load(
                    scale_ptr + (n // BLOCK_OUT) * stride_s + block_column, mask=n_mask, other=0.0
                )
                w = w * scale[:, None]
            acc += w * x
    y = tl.sum(acc, 1)
    if BLOCK_OUT == 0:
        y = y * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    if FORMAT != INT8 and not NATIVE_FP8:
        y = y * FP8_BITS_UNIT
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


@triton.jit(do_not_specialize=["rows"])
def _packed_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, g_idx_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr,
    order_ptr, rows, N, K, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, ONE_GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, GATHER: tl.constexpr,
):  # fmt: skip
    """ONE_GROUP: every CHUNK rows lie in one group (read at the chunk's first row, clamped to K - 1
    where a chunk starts past K: its activations are masked to zero there)."""
    tile, row = _tile_and_row(rows)
    n0 = tile * BLOCK_N
    n = n0 + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([CHUNK, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            start = k0 + c * CHUNK
            k = start + tl.arange(0, CHUNK)
            x = tl.trans(row_inputs(x_row, k, K, norm_weight_ptr, order_ptr, rstd, PROLOGUE, GATHER))
            zeros, scales = zeros_and_scales(
                zero_ptr, scale_ptr, g_idx_ptr, tl.minimum(start, K - 1) if ONE_GROUP else start, n, K, N,
                stride_sg, stride_zg, BITS, ZERO_OFFSET, GROUP, ONE_GROUP, CHUNK,
            )  # fmt: skip
            values = packed_values(w_ptr, start, n0, K, N, stride_wk, BITS, CHUNK, BLOCK_N)
            acc += (offset_float(values) - (OFFSET + zeros)) * (x * scales)  # (q - zero) * scale * x
    y = tl.sum(acc, 0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def _byte_gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor,
    is_int8: bool,
    block: tuple[int, int] | None,
    fusion: Fusion,
    shape: GemvShape | None = None,
) -> torch.Tensor:
    assert fusion.input_order is None, "weights stored [out, in] keep the input order"
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.shape[0]
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    shape = shape or default_shape(False, n, x.device)
    block_n = shape.block_n
    block_k = min(triton.next_power_of_2(k), shape.tile_bytes // block_n)
    chunk = min(block_k, BYTE_CHUNK_ELEMENTS // block_n) if block is None else block[1]
    block_k = max(block_k, chunk) // chunk * chunk
    weight_format = WeightFormat.INT8 if is_int8 else WeightFormat.FP8
    _byte_gemv_kernel[(triton.cdiv(n, block_n) * rows,)](
        x_ptr=x, w_ptr=weight.view(torch.uint8) if not is_int8 else weight, scale_ptr=scales, out_ptr=out,
        rows=rows, N=n, K=k, stride_x=x.stride(0), stride_w=weight.stride(0),
        stride_s=scales.stride(0) if block else 0, stride_o=out.stride(0), **fusion.kernel_args(x),
        FORMAT=int(weight_format), NATIVE_FP8=wf.native_fp8(x.device),
        BLOCK_OUT=block[0] if block else 0, BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=chunk,
        num_warps=8 if block_n * chunk >= 8192 else 4,
    )  # fmt: skip
    return out


def fp8_block_gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block: tuple[int, int],
    fusion: Fusion = NO_FUSION,
) -> torch.Tensor:
    """x [tokens, in] (gate|up [tokens, 2 in] under `fusion.silu_mul`) times an e4m3 weight [out, in]
    with block scales -> [tokens, out] in x's dtype: `fp8_gemv`'s word kernel where it takes the weight
    and blocks, else the byte kernel (block[1], the block's input columns, a power of two of at least 16)."""
    x = _rows(x)
    if fp8_gemv.supports(weight, block):
        return fp8_gemv.gemv(x, weight, weight_scale_inv, fusion, block=block)
    return _byte_gemv(x, weight, weight_scale_inv, False, block, fusion)


def packed_chunk(weight: PackedWeight) -> tuple[int, bool]:
    """(CHUNK, ONE_GROUP): the largest power-of-two divisor of the group (at most MAX_CHUNK) where groups
    follow the row order and that divisor is at least 16; else ACT_ORDER_CHUNK rows, groups per row."""
    chunk = min(MAX_CHUNK, weight.group_size & -weight.group_size)
    return (chunk, True) if weight.groups_in_row_order and chunk >= 16 else (ACT_ORDER_CHUNK, False)


def gemv(
    x: torch.Tensor, weight: PackedWeight, fusion: Fusion = NO_FUSION, shape: GemvShape | None = None
) -> torch.Tensor:
    """x [tokens, in] (gate|up [tokens, 2 in] under `fusion.silu_mul`) -> [tokens, out] in x's dtype,
    for any `PackedWeight` format; `shape` None: `default_shape`, or `int4_mma` / `int4_gemv` / `fp8_gemv`
    where they apply (a shape sweeps this module's own kernels)."""
    x = _rows(x)
    if shape is None and weight.format == WeightFormat.GPTQ and int4_mma.supports(x, weight):
        return int4_mma.gemv(x, weight, fusion)
    if shape is None and weight.format == WeightFormat.GPTQ and int4_gemv.supports(weight):
        return int4_gemv.gemv(x, weight, fusion)
    if shape is None and weight.format == WeightFormat.FP8 and fp8_gemv.supports(weight.weight):
        return fp8_gemv.gemv(x, weight.weight, weight.scales, fusion)
    if weight.format < WeightFormat.GPTQ:
        is_int8 = weight.format == WeightFormat.INT8
        return _byte_gemv(x, weight.weight, weight.scales, is_int8, None, fusion, shape)
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    chunk, one_group = packed_chunk(weight)
    shape = shape or default_shape(True, n, x.device)
    block_n = shape.block_n
    chunks = shape.tile_bytes * 8 // (weight.bits * block_n * chunk)
    chunks = max(1, min(chunks, MAX_CHUNKS, triton.cdiv(k, chunk)))
    w_ptr, scale_ptr, zero_ptr, g_idx_ptr = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _packed_gemv_kernel[(triton.cdiv(n, block_n) * rows,)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, g_idx_ptr=g_idx_ptr, out_ptr=out,
        rows=rows, N=n, K=k, stride_x=x.stride(0), stride_wk=weight.weight.stride(0), stride_sg=stride_sg,
        stride_zg=stride_zg, stride_o=out.stride(0), **fusion.kernel_args(x), **fusion.gather_args(x),
        BITS=weight.bits,
        ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size, ONE_GROUP=one_group, BLOCK_N=block_n,
        BLOCK_K=chunks * chunk, CHUNK=chunk, num_warps=8 if chunk * block_n >= 8192 else 4,
    )  # fmt: skip
    return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()
