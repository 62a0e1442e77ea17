"""The e4m3 decode GEMV: y = x W^T for one to a few token rows, W float8_e4m3fn [out, in] with one scale
per output channel (`--quantization fp8`) or per block (FP8 checkpoints, `weight_block_size`), with the
fused small-batch path's prologue and epilogue (`gemv_fusion`). References: `Fp8ChannelMethod.apply` and
`Fp8BlockMethod.apply` (x times the dequantized weight).

Block scales ride on the activations: a tile's outputs lie in one block row, so each K step multiplies its
activations by their block column's scale (one load per step, shared by the tile's rows) and the weights'
products stay as they are. The activations are not quantized, as on the per-channel path.

`quant_gemv`'s byte kernel reads the bytes as bytes and decodes each one on its own; it cannot carry a
K step's bytes into the next iteration without a byte permute per byte moved, so it loads and computes
in turn and waits on memory latency (H100: 2.7 TB/s against bf16's 3.07). Here the weight is read as
int32 words of four consecutive inputs, as `int4_gemv` reads its 4-bit words:
- each program issues its next K step's loads (words, activations) before it computes the current one,
  so it keeps two steps' bytes in flight, and K is split (`gemv_fusion.split_count`) to give every SM
  several programs;
- each word meets its four activations in inline PTX (sm_89 and later): two conversions of a byte pair
  to an f16 pair, four to fp32 (exact), four fp32 FMAs into the word's running sum.
The portable path (Triton's interpreter, GPUs without fp8 conversions) decodes the words' bytes in plain
Triton to the same fp32 values. One Qwen3-8B layer's four GEMVs at one token: H100 89 -> 82 us, H200
77 -> 66 us (docs/benchmarks.md, 16 outputs and 512 inputs a step at 4 warps won the sweep on both).

A projection with one to two tiles per SM (Qwen3-8B's o and down, Qwen3-0.6B's q|k|v: 256 tiles on 132
SMs) runs every tile of a one-token row in one wave; there an unsplit K range in steps twice as deep, at
twice the warps (the same bytes per thread), beats splitting K: H200 o 8.3 -> 7.2 us, down 16.4 -> 15.5;
H100 Qwen3-8B layer 81.6 -> 79.8 us, Qwen3-4B 53.1 -> 49.8 (weights read from HBM). At two rows it won
for Qwen3-8B and lost for Qwen3-4B's down (17.0 -> 19.6), so two rows keep the split. Block scales there
take split tiles of 32 x 256 at 8 warps instead (`default_tile`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton.gemv_fusion import (
    MAX_ROWS,
    Fusion,
    row_loads,
    row_rstd,
    split_count,
    split_program,
    split_scratch,
    store_split_row,
)
from tokenmill.kernels.triton.gemv_rows import four_columns, prologue_finish
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile
from tokenmill.kernels.triton.weight_formats import FP8, FP8_BITS_UNIT, decode_bytes

BLOCK_K = 512  # inputs (bytes) per row per K step
WIDEST_TILE = 16  # output rows per program, narrower where the tiles would not cover the SMs
NUM_WARPS = 4
ONE_WAVE_TILES_PER_SM = 2  # up to this many tiles per SM, every tile's program runs in the first wave
RESIDENT_PROGRAMS_PER_SM = 5  # of NUM_WARPS at the ~96 registers a thread the kernel takes uncapped
CAPPED_REGISTERS = 80  # six resident, for one-token launches of more programs than five an SM hold
WAVE_TILE = (32, BLOCK_K // 2)  # such a launch's tile: the same bytes a step, half the programs (one wave)
BLOCK_SCALED_ONE_WAVE_TILE = (32, BLOCK_K // 2, 2 * NUM_WARPS)  # (outputs, inputs, warps): `default_tile`

# $1 holds four e4m3 weights (inputs k..k+3, little-endian), $2..$5 their activations, $6 the running
# sum of this word column: $0 = $6 + sum of the four products, in fp32.
_E4M3_WORD_FMA = tl.constexpr("""
{
.reg .b16 lo, hi, h0, h1, h2, h3;
.reg .b32 p0, p1;
.reg .f32 f0, f1, f2, f3, sum;
mov.b32 {lo, hi}, $1;
cvt.rn.f16x2.e4m3x2 p0, lo;
cvt.rn.f16x2.e4m3x2 p1, hi;
mov.b32 {h0, h1}, p0;
mov.b32 {h2, h3}, p1;
cvt.f32.f16 f0, h0;
cvt.f32.f16 f1, h1;
cvt.f32.f16 f2, h2;
cvt.f32.f16 f3, h3;
fma.rn.f32 sum, f0, $2, $6;
fma.rn.f32 sum, f1, $3, sum;
fma.rn.f32 sum, f2, $4, sum;
fma.rn.f32 $0, f3, $5, sum;
}
""")


@triton.jit
def _byte_values(words, i: tl.constexpr, NATIVE_FP8: tl.constexpr):
    """The i-th byte of each word as the fp32 e4m3 value (times 2^-8 without fp8 conversions)."""
    return decode_bytes(((words >> (8 * i)) & 0xFF).to(tl.uint8), FP8, NATIVE_FP8)


@triton.jit
def _word_fma(acc, words, x, WORDS: tl.constexpr, USE_ASM: tl.constexpr, NATIVE_FP8: tl.constexpr):
    """acc [BLOCK_N, WORDS] plus each word's four products with its activations x [1, 4 * WORDS]."""
    x0, x1, x2, x3 = four_columns(tl.reshape(x, [WORDS, 4]), WORDS)  # inputs 4w, 4w + 1, ...
    x0, x1, x2, x3 = x0[None, :], x1[None, :], x2[None, :], x3[None, :]
    if USE_ASM:
        shape: tl.constexpr = acc.shape
        acc = tl.inline_asm_elementwise(
            _E4M3_WORD_FMA, "=f,r,f,f,f,f,f",
            [words, tl.broadcast_to(x0, shape), tl.broadcast_to(x1, shape), tl.broadcast_to(x2, shape),
             tl.broadcast_to(x3, shape), acc],
            dtype=tl.float32, is_pure=True, pack=1,
        )  # fmt: skip
    else:
        acc += _byte_values(words, 0, NATIVE_FP8) * x0 + _byte_values(words, 1, NATIVE_FP8) * x1
        acc += _byte_values(words, 2, NATIVE_FP8) * x2 + _byte_values(words, 3, NATIVE_FP8) * x3
    return acc


@triton.jit
def _word_loads(w_ptr, k0, k_end, n, n_mask, stride_w, BLOCK_K: tl.constexpr):
    """The words of K step k0, masked past this split's end."""
    word = k0 // 4 + tl.arange(0, BLOCK_K // 4)
    return tl.load(
        w_ptr + n[:, None] * stride_w + word[None, :],
        mask=n_mask[:, None] & (word < k_end // 4)[None, :], other=0,
    )  # fmt: skip


@triton.jit
def _block_scales(scale_ptr, first_output, stride_s, k, K, BLOCK_OUT: tl.constexpr, BLOCK_IN: tl.constexpr):
    """[1, len(k)]: the scale of each input column k in the block row of output `first_output` (a
    tile's outputs share one); 1 where scales are per channel (BLOCK_IN 0)."""
    if BLOCK_IN == 0:
        scales = tl.full([1, k.shape[0]], 1.0, tl.float32)
    else:
        block_row = scale_ptr + (first_output // BLOCK_OUT) * stride_s
        scales = tl.load(block_row + k // BLOCK_IN, mask=k < K, other=0.0)[None, :]
    return scales


@triton.jit(do_not_specialize=["rows"])
def _fp8_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr,
    rows, N, K, k_per_split, stride_x, stride_w, stride_s, stride_o, stride_r, eps,
    SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_ASM: tl.constexpr,
    NATIVE_FP8: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    NORM_BLOCK: tl.constexpr, BLOCK_OUT: tl.constexpr, BLOCK_IN: tl.constexpr,
):  # fmt: skip
    """Program (tile, row, split): BLOCK_N outputs of one token row over inputs [split * k_per_split,
    ...), stride_w counted in words; each K step's loads issued one step ahead (past the split's end the
    words' mask is empty; the activations read there, the next split's or none, meet zeros). BLOCK_IN 0:
    per-channel scales; else blocks of BLOCK_OUT x BLOCK_IN (BLOCK_OUT a multiple of BLOCK_N), their
    scales' rows stride_s apart."""
    tl.static_assert(NATIVE_FP8 or not USE_ASM, "the inline PTX converts with sm_89's fp8 instructions")
    WORDS: tl.constexpr = BLOCK_K // 4
    split, tile_row, row, n, k_start, k_end = split_program(rows, K, k_per_split, SPLIT, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    first_output = tile_row // rows * BLOCK_N
    words = _word_loads(w_ptr, k_start, k_end, n, n_mask, stride_w, BLOCK_K)
    k = k_start + tl.arange(0, BLOCK_K)
    x, second = row_loads(x_row, k, K, norm_weight_ptr, x_row, PROLOGUE, False)
    scales = _block_scales(scale_ptr, first_output, stride_s, k, K, BLOCK_OUT, BLOCK_IN)
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([BLOCK_N, WORDS], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        current, x_now, second_now, scales_now = words, x, second, scales
        words = _word_loads(w_ptr, k0 + BLOCK_K, k_end, n, n_mask, stride_w, BLOCK_K)
        k = k0 + BLOCK_K + tl.arange(0, BLOCK_K)
        x, second = row_loads(x_row, k, K, norm_weight_ptr, x_row, PROLOGUE, False)
        scales = _block_scales(scale_ptr, first_output, stride_s, k, K, BLOCK_OUT, BLOCK_IN)
        x_now = prologue_finish(x_now, second_now, rstd, PROLOGUE)
        if BLOCK_IN != 0:
            x_now = x_now * scales_now
        acc = _word_fma(acc, current, x_now, WORDS, USE_ASM, NATIVE_FP8)
    y = tl.sum(acc, 1)
    if BLOCK_IN == 0:
        y = y * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    if not NATIVE_FP8:
        y = y * FP8_BITS_UNIT
    store_split_row(
        y, out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr, row, n, n_mask,
        stride_o, stride_r, SPLIT, BLOCK_N, HAS_BIAS, HAS_RESIDUAL,
    )  # fmt: skip


def supports(weight: torch.Tensor, block: tuple[int, int] | None = None) -> bool:
    """Rows that read as whole int32 words: contiguous, four-byte aligned, a multiple of four inputs; block
    scales whose rows hold whole tiles (any tile width the launcher picks divides WIDEST_TILE)."""
    return (
        weight.stride(1) == 1
        and weight.shape[1] % 4 == 0
        and weight.stride(0) % 4 == 0
        and weight.data_ptr() % 4 == 0
        and (block is None or block[0] % WIDEST_TILE == 0)
    )


def _uses_asm(device: torch.device) -> bool:
    """fp8 conversions in inline PTX: a GPU of sm_89 or later, not Triton's interpreter."""
    return wf.compiles_ptx(device) and wf.native_fp8(device)


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor,
    fusion: Fusion,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    deep: bool = True,
    block: tuple[int, int] | None = None,
) -> torch.Tensor:
    """x [tokens, in] (gate|up [tokens, 2 in] under `fusion.silu_mul`) times an e4m3 weight [out, in]
    with per-output `scales` ([out]), or with `block` (out, in) scales ([ceil(out / block[0]),
    ceil(in / block[1])], multiplied to dequantize) -> [tokens, out] in x's dtype. `block_n`, `block_k`
    and `num_warps` are the launch shape (None: `default_tile`; the defaults won the sweep in
    docs/benchmarks.md, 2026-11-23 fifth session); `deep`: one token row's single wave of tiles runs
    unsplit, in steps of twice `block_k` at twice `num_warps`."""
    assert supports(weight, block), f"fp8_gemv does not take this weight ({tuple(weight.shape)}, {block})"
    assert fusion.input_order is None, "e4m3 weights keep the input order"
    rows, k, n = x.shape[0], fusion.in_features(x), weight.shape[0]
    assert weight.shape[1] == k, f"the weight takes {weight.shape[1]} inputs, x gives {k}"
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    sms = num_sms(x.device)
    tile_n, tile_k, tile_warps = default_tile(rows, n, block, sms)
    num_warps = num_warps or (tile_warps if block_n is None and block_k is None else NUM_WARPS)
    block_n, block_k = block_n or tile_n, block_k or tile_k
    assert block is None or block[0] % block_n == 0, f"tiles of {block_n} outputs straddle {block} blocks"
    tiles = triton.cdiv(n, block_n)
    if rows > MAX_ROWS:
        split = 1
    elif rows == 1 and sms <= tiles < ONE_WAVE_TILES_PER_SM * sms and deep:
        block_k, num_warps, split = 2 * block_k, 2 * num_warps, 1
    else:
        split = split_count(tiles, k, block_k, block_n, sms)
    programs = tiles * rows * split
    _fp8_gemv_kernel[(programs,)](
        x_ptr=x, w_ptr=weight.view(torch.int32), scale_ptr=scales, out_ptr=out, **split_scratch(x.device),
        rows=rows, N=n, K=k, k_per_split=k // split, stride_x=x.stride(0), stride_w=weight.stride(0) // 4,
        stride_s=scales.stride(0) if block else 0, stride_o=out.stride(0), **fusion.kernel_args(x),
        SPLIT=split, BLOCK_N=block_n, BLOCK_K=block_k, USE_ASM=_uses_asm(x.device),
        NATIVE_FP8=wf.native_fp8(x.device), BLOCK_OUT=block[0] if block else 0,
        BLOCK_IN=block[1] if block else 0, num_warps=num_warps, **register_cap(rows, programs, sms),
    )  # fmt: skip
    return out


def default_tile(rows: int, n: int, block: tuple[int, int] | None, sms: int) -> tuple[int, int, int]:
    """(outputs, inputs, warps) of a program's K step: the widest tile of up to WIDEST_TILE outputs that
    covers the SMs, BLOCK_K deep, NUM_WARPS; WAVE_TILE for a one-token launch whose programs would
    outnumber what five an SM hold (and whose block rows, if any, hold whole wave tiles). With the
    register cap that makes six resident, Qwen3-8B's gate|up then runs 768 programs in one wave of 792
    (H200: 28.2 -> 26.9 us). Block scales where 16-wide tiles make one wave (1-2 an SM, which `gemv` runs
    unsplit in deep steps) take BLOCK_SCALED_ONE_WAVE_TILE, split: per-channel scales win deep, but
    blocks pay for a scale per 128 inputs of a deep step (H200, Qwen3-8B o 8.44 -> 7.94 us, down 18.74
    -> 16.71; docs/benchmarks.md, 2026-11-24, eighteenth session)."""
    block_n = widest_covering_tile(n, 8, WIDEST_TILE, sms)
    tiles = triton.cdiv(n, block_n)
    fits = block is None or block[0] % WAVE_TILE[0] == 0
    if rows == 1 and fits and tiles > RESIDENT_PROGRAMS_PER_SM * sms:
        return (*WAVE_TILE, NUM_WARPS)
    one_wave = block_n == WIDEST_TILE and sms <= tiles < ONE_WAVE_TILES_PER_SM * sms
    if rows == 1 and block is not None and fits and one_wave:
        return BLOCK_SCALED_ONE_WAVE_TILE
    return block_n, BLOCK_K, NUM_WARPS


def register_cap(rows: int, programs: int, sms: int) -> dict[str, int]:
    """`maxnreg` for a one-token launch whose programs outnumber what the SMs hold at once uncapped: a
    sixth resident program per SM fills the later waves (Qwen3-8B gate|up, 1,536 programs: 2.3 waves of
    5 an SM, 1.9 of 6; H200 30.5 -> 28.6 us). Where one wave holds every program the cap only costs
    (q|k|v 9.7 -> 10.4 us, down 16.4 -> 17.3), and at two rows it cost gate|up and down more than it
    gave q|k|v (H200: 98.2 -> 102.3 us a layer)."""
    capped = rows == 1 and programs > RESIDENT_PROGRAMS_PER_SM * sms
    return {"maxnreg": CAPPED_REGISTERS} if capped else {}
