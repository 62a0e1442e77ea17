"""GEMV and skinny GEMM for decode batches of a few tokens, with the layer's neighbouring element-wise
kernels fused in (references: `reference.linear`, `reference.rms_norm_linear`, `reference.silu_mul_linear`).

At one token per step a decoder layer is ~9 kernels that each move little data, so launch latency, not
bandwidth, sets the step time. Here the RMSNorm runs in the prologue of the GEMV that reads its output
(the norm's row is short enough for every program to normalise it), SiLU-and-mul in the prologue of the
down projection (it reads gate|up), and the residual add in the epilogue of the o and down projections;
with LoRA, each row's delta rides in the same kernel (`lora_fold`), so an adapter adds no launch.

One token (BLOCK_M 1): each program computes BLOCK_N outputs on the CUDA cores, streaming BLOCK_N weight
rows ([N, K], K contiguous) through a [BLOCK_N, BLOCK_K] fp32 accumulator summed once at the end.
Filling the GPU comes from narrow tiles rather than from splitting K: BLOCK_N shrinks (16 down to 1 row)
until the tiles alone cover every SM, so no partial sums and no reduction kernel. Two to 8 tokens
(BLOCK_M 16, rows past the batch masked): each program multiplies every token by a 16-row weight tile on
the tensor cores, so the weight is read once whatever the batch — except behind the SiLU-and-mul
prologue, whose tensor-core variant ran 8-12x slower than one program per token and tile (H100:
54 vs 7 us for Qwen3-0.6B's down projection at 5 tokens), so there each token runs the one-token tiles
and re-reads the weight tiles from L2. Either way every output is one program's fixed-order sum: the
same run after run, and a row's result does not depend on the other rows (nor, from 2 to 8, on how
many there are). `bench/gemv_sweep.py` times tile variants (docs/benchmarks.md): the one-token tiles
that won there in isolation did not speed up a whole decode step, nor did launching the GEMVs with
programmatic dependent launch (their first weight tile loaded under the previous kernel's tail).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from tokenmill.kernels.lora_mapping import LoRAWeights
from tokenmill.kernels.triton.gemv_rows import rows_rstd, tile_products
from tokenmill.kernels.triton.lora_fold import expand, expand_operands, fold_args, shrink_program
from tokenmill.kernels.triton.split_k import num_sms, widest_covering_tile

TILE_ELEMENTS = 8192  # weight elements per program per K step: 16 KB of bf16 in flight per program
MAX_BLOCK_N = 16
DOT_ROWS = 16  # the token rows of a tensor-core tile (2 to 8 real ones, the rest masked)
DOT_BLOCK_K = 256  # K per tensor-core step: larger spilled the SiLU-and-mul prologue's registers
DOT_STAGES = 3
# Registers a thread of a one-token tile may take with a LoRA delta folded in (every launch with BLOCK_M 1:
# one token, or SiLU-and-mul's 2 to 8 run per token). Without LoRA these kernels take at most 80 on sm_90
# and sm_120, so three 8-warp programs share an SM; the fold pushed them to 88-91, two programs an SM, and
# Qwen3-0.6B's gate|up (384 tiles) into a second wave: 10.5 us a launch against 6.9 without LoRA (H100).
# Capped at 80 they compile without spills.
LORA_ONE_TOKEN_MAX_REGISTERS = 80


@triton.jit
def _gemv_tile(
    program, x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, n, k,
    stride_x, stride_w, stride_o, stride_r, eps,
    lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, count_ptr, producers, shard_end0, shard_end1,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_LORA: tl.constexpr, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """A tile program: BLOCK_N outputs of BLOCK_M token rows. With HAS_LORA, each row's delta B·s
    (`lora_fold.expand`; a one-token tile loads B before its K loop) added to the rounded projection
    before the residual, as `lora_reference.lora_delta` rounds."""
    row_blocks = tl.cdiv(rows, BLOCK_M)
    tile, row_block = program // row_blocks, program % row_blocks
    row_ids = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = row_ids < rows
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n
    if HAS_LORA and BLOCK_M == 1:  # B under the K loop; the tensor-core tiles have no registers to spare
        b, r = expand_operands(
            row_ids, row_mask, cols, col_mask, lora_b_ptr, ranks_ptr, slots_ptr, n, tile * BLOCK_N,
            shard_end0, shard_end1, SHARDS, MAX_RANK, BLOCK_R,
        )  # fmt: skip
    x_rows = x_ptr + row_ids[:, None] * stride_x
    rstd = rows_rstd(x_rows, row_mask, k, eps, PROLOGUE, BLOCK_M, BLOCK_K)
    w_rows = weight_ptr + cols[:, None] * stride_w
    y = tile_products(
        x_rows, row_mask, rstd, w_rows, col_mask, k, norm_weight_ptr, PROLOGUE, BLOCK_M, BLOCK_N, BLOCK_K
    )
    if HAS_BIAS:
        y += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    dtype = out_ptr.dtype.element_ty
    out = y.to(dtype)
    if HAS_LORA:
        if BLOCK_M > 1:
            b, r = expand_operands(
                row_ids, row_mask, cols, col_mask, lora_b_ptr, ranks_ptr, slots_ptr, n, tile * BLOCK_N,
                shard_end0, shard_end1, SHARDS, MAX_RANK, BLOCK_R,
            )  # fmt: skip
        delta = expand(b, r, row_ids, row_mask, shrinks_ptr, stride_s, count_ptr, producers, SHARDS, MAX_RANK)
        out = (out.to(tl.float32) + delta.to(dtype).to(tl.float32)).to(dtype)
    mask = row_mask[:, None] & col_mask[None, :]
    if HAS_RESIDUAL:
        out = out + tl.load(residual_ptr + row_ids[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + row_ids[:, None] * stride_o + cols[None, :], out, mask=mask)


@triton.jit
def _gemv_program(
    x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, n, k,
    stride_x, stride_w, stride_o, stride_r, eps,
    lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
    producers, shard_end0, shard_end1,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_LORA: tl.constexpr, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """The body of the three kernels: with HAS_LORA, the first `producers` programs are shrink
    programs and the rest tiles; without, every program a tile (the same code as before LoRA)."""
    program = tl.program_id(0)
    count_ptr = counts_ptr + site  # where this launch's shrink programs count themselves in
    if HAS_LORA and program < producers:
        shrink_program(
            program, x_ptr, rows, k, stride_x, eps, norm_weight_ptr,
            lora_a_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, count_ptr,
            PROLOGUE, SHARDS, MAX_RANK, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        _gemv_tile(
            program - producers if HAS_LORA else program, x_ptr, weight_ptr, out_ptr, norm_weight_ptr,
            bias_ptr, residual_ptr, rows, n, k, stride_x, stride_w, stride_o, stride_r, eps,
            lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, count_ptr, producers,
            shard_end0, shard_end1, PROLOGUE, HAS_BIAS, HAS_RESIDUAL, BLOCK_M, BLOCK_N, BLOCK_K,
            HAS_LORA, SHARDS, MAX_RANK, BLOCK_R,
        )  # fmt: skip


# One kernel per fusion, so a profile tells the projections apart by name. `rows` is not specialized
# (not even 1): one compiled variant per BLOCK_M serves every batch width, the widths the decode graphs
# capture and the eager LM head and short prefills alike. Without LoRA (HAS_LORA off) its operands are
# placeholders the compiled code never reads.


@triton.jit(do_not_specialize=["rows", "producers", "site"])
def _gemv_kernel(
    x_ptr, weight_ptr, out_ptr, bias_ptr, residual_ptr, rows, n, k, stride_x, stride_w, stride_o, stride_r,
    lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
    producers, shard_end0, shard_end1, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_LORA: tl.constexpr, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    _gemv_program(
        x_ptr, weight_ptr, out_ptr, x_ptr, bias_ptr, residual_ptr, rows, n, k,
        stride_x, stride_w, stride_o, stride_r, 0.0,
        lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
        producers, shard_end0, shard_end1, 0, HAS_BIAS, HAS_RESIDUAL, BLOCK_M, BLOCK_N, BLOCK_K,
        HAS_LORA, SHARDS, MAX_RANK, BLOCK_R,
    )  # fmt: skip


@triton.jit(do_not_specialize=["rows", "producers", "site"])
def _rms_norm_gemv_kernel(
    x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, rows, n, k, stride_x, stride_w, stride_o, eps,
    lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
    producers, shard_end0, shard_end1, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_LORA: tl.constexpr, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    _gemv_program(
        x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, x_ptr, rows, n, k,
        stride_x, stride_w, stride_o, 0, eps,
        lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
        producers, shard_end0, shard_end1, 1, HAS_BIAS, False, BLOCK_M, BLOCK_N, BLOCK_K,
        HAS_LORA, SHARDS, MAX_RANK, BLOCK_R,
    )  # fmt: skip


@triton.jit(do_not_specialize=["rows", "producers", "site"])
def _silu_mul_gemv_kernel(
    x_ptr, weight_ptr, out_ptr, residual_ptr, rows, n, k, stride_x, stride_w, stride_o, stride_r,
    lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
    producers, shard_end0, shard_end1, HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_LORA: tl.constexpr, SHARDS: tl.constexpr, MAX_RANK: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    _gemv_program(
        x_ptr, weight_ptr, out_ptr, x_ptr, x_ptr, residual_ptr, rows, n, k,
        stride_x, stride_w, stride_o, stride_r, 0.0,
        lora_a_ptr, lora_b_ptr, ranks_ptr, slots_ptr, shrinks_ptr, stride_s, counts_ptr, site,
        producers, shard_end0, shard_end1, 2, False, HAS_RESIDUAL, BLOCK_M, BLOCK_N, BLOCK_K,
        HAS_LORA, SHARDS, MAX_RANK, BLOCK_R,
    )  # fmt: skip


def tile_shape(rows: int, n: int, k: int, sms: int, silu_prologue: bool = False) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K). One token: the widest tile (at most MAX_BLOCK_N weight rows) whose
    tiles still cover every SM, with TILE_ELEMENTS weight elements per K step. More tokens: 16 x 16
    tensor-core tiles (the smallest a dot takes), K in steps of DOT_BLOCK_K whose weight loads Triton
    pipelines (they feed the dot); behind the SiLU-and-mul prologue, the widest one-token tile for each
    token (not narrowed to cover the SMs: narrower tiles did not help in the sweep)."""
    k_pow2 = triton.next_power_of_2(k)
    if rows > 1 and not silu_prologue:
        return DOT_ROWS, MAX_BLOCK_N, max(DOT_ROWS, min(k_pow2, DOT_BLOCK_K))
    block_n = widest_covering_tile(n, 1, MAX_BLOCK_N, sms) if rows == 1 else MAX_BLOCK_N
    return 1, block_n, min(k_pow2, TILE_ELEMENTS // block_n)


def launch_options(block_m: int, lora: bool) -> dict[str, int]:
    """Compile options of a launch besides its warps: the tensor-core tiles' pipeline stages, the
    one-token tiles' register cap under LoRA (`LORA_ONE_TOKEN_MAX_REGISTERS`)."""
    if block_m > 1:
        return {"num_stages": DOT_STAGES}
    return {"maxnreg": LORA_ONE_TOKEN_MAX_REGISTERS} if lora else {}


def _launch(
    kernel: triton.JITFunction,
    x: Tensor,
    weight: Tensor,
    k: int,
    residual: Tensor | None,
    lora: LoRAWeights | None,
    **args: object,
) -> Tensor:
    """x [rows, k] (gate|up: [rows, 2k]) times weight [n, k]ᵀ (+ each row's LoRA delta) -> [rows, n] in
    x's dtype."""
    assert weight.shape[1] == k and weight.stride(1) == 1, "the weight is [out, in] with rows contiguous"
    x = x if x.stride(-1) == 1 else x.contiguous()
    rows, n = x.shape[0], weight.shape[0]
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    silu_prologue = kernel is _silu_mul_gemv_kernel
    block_m, block_n, block_k = tile_shape(rows, n, k, num_sms(x.device), silu_prologue)
    args.update(fold_args(lora, rows, n, block_n, x))
    options = launch_options(block_m, lora is not None)
    if residual is not None:
        args.update(residual_ptr=residual, stride_r=residual.stride(0), HAS_RESIDUAL=True)
    # 8 warps for a full weight tile, or for the expand's B tile of 16 rows at rank 64 (4 took 250 registers
    # a thread on sm_90, 8 take 190)
    big_tile = max(block_n * block_k, block_m * block_n * args["BLOCK_R"]) >= TILE_ELEMENTS
    kernel[(args["producers"] + triton.cdiv(n, block_n) * triton.cdiv(rows, block_m),)](
        x_ptr=x, weight_ptr=weight, out_ptr=out, rows=rows, n=n, k=k,
        stride_x=x.stride(0), stride_w=weight.stride(0), stride_o=out.stride(0), **args,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=8 if big_tile else 4, **options,
    )  # fmt: skip
    return out


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    lora: LoRAWeights | None = None,
) -> Tensor:
    """x Wᵀ (+ bias) (+ each row's LoRA delta) (+ residual, added after rounding to x's dtype, as a
    separate add would)."""
    return _launch(
        _gemv_kernel, x, weight, x.shape[-1], residual, lora, bias_ptr=x if bias is None else bias,
        residual_ptr=x, stride_r=0, HAS_BIAS=bias is not None, HAS_RESIDUAL=False,
    )  # fmt: skip


def rms_norm_linear(
    x: Tensor,
    norm_weight: Tensor,
    eps: float,
    weight: Tensor,
    bias: Tensor | None = None,
    lora: LoRAWeights | None = None,
) -> Tensor:
    """RMSNorm(x) Wᵀ (+ bias) (+ each row's LoRA delta) without writing the normalised rows."""
    return _launch(
        _rms_norm_gemv_kernel, x, weight, x.shape[-1], None, lora, norm_weight_ptr=norm_weight,
        bias_ptr=x if bias is None else bias, eps=eps, HAS_BIAS=bias is not None,
    )  # fmt: skip


def silu_mul_linear(
    gate_up: Tensor, weight: Tensor, residual: Tensor | None = None, lora: LoRAWeights | None = None
) -> Tensor:
    """(SiLU(gate) * up) Wᵀ (+ each row's LoRA delta) (+ residual) from the fused gate|up projection's
    output [rows, 2k]."""
    return _launch(
        _silu_mul_gemv_kernel, gate_up, weight, gate_up.shape[-1] // 2, residual, lora,
        residual_ptr=gate_up, stride_r=0, HAS_RESIDUAL=False,
    )  # fmt: skip
