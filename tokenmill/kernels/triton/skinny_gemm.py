"""GEMV for decode batches of a few tokens, with the layer's neighbouring element-wise kernels fused in
(references: `reference.linear`, `reference.rms_norm_linear`, `reference.silu_mul_linear`).

At one token per step a decoder layer is ~9 kernels that each move little data, so launch latency, not
bandwidth, sets the step time. Here the RMSNorm runs in the prologue of the GEMV that reads its output
(the norm's row is short enough for every program to normalise it), SiLU-and-mul in the prologue of the
down projection (it reads gate|up), and the residual add in the epilogue of the o and down projections.

Each program computes BLOCK_N outputs of one token row, streaming BLOCK_N weight rows ([N, K], K
contiguous) through a [BLOCK_N, BLOCK_K] fp32 accumulator that is summed once at the end. Filling the
GPU comes from narrow tiles rather than from splitting K: BLOCK_N shrinks (16 down to 1 row) until the
tiles alone cover every SM. For the Qwen3 0.6B-8B projections on 132 SMs (N from 1024 to 24576) that is
at least 160 tiles per launch with no split, so no partial sums and no reduction kernel: every output
is one program's fixed-order sum, the same whatever the batch (a row's result does not depend on the
other rows either) and the same run after run. The token rows of one tile are neighbouring programs,
so a batch of up to 8 reads each weight tile from HBM once and from L2 for the other rows.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from tokenmill.kernels.triton.split_k import num_sms

TILE_ELEMENTS = 8192  # weight elements per program per K step: 16 KB of bf16 in flight per program
MAX_BLOCK_N = 16


@triton.jit
def _activations(x_row, norm_weight_ptr, ks, k_mask, k, rstd, PROLOGUE: tl.constexpr):
    """One K block of the token's GEMV input in fp32, rounded to the activation dtype as the unfused
    kernels round their outputs: PROLOGUE 0 the raw row, 1 its RMSNorm, 2 SiLU(gate) * up of its
    gate|up halves."""
    dtype = x_row.dtype.element_ty
    if PROLOGUE == 1:
        x = tl.load(x_row + ks, mask=k_mask, other=0.0).to(tl.float32)
        weight = tl.load(norm_weight_ptr + ks, mask=k_mask, other=0.0)
        return (weight * (x * rstd).to(dtype)).to(tl.float32)
    if PROLOGUE == 2:
        gate = tl.load(x_row + ks, mask=k_mask, other=0.0).to(tl.float32)
        up = tl.load(x_row + k + ks, mask=k_mask, other=0.0).to(tl.float32)
        return (gate * tl.sigmoid(gate) * up).to(dtype).to(tl.float32)
    return tl.load(x_row + ks, mask=k_mask, other=0.0).to(tl.float32)


@triton.jit
def _gemv_tile(
    x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, n, k,
    stride_x, stride_w, stride_o, stride_r, eps,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The body of the three kernels: BLOCK_N outputs of one token row."""
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n
    x_row = x_ptr + row * stride_x
    rstd = 0.0
    if PROLOGUE == 1:
        squares = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, k, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_row + ks, mask=ks < k, other=0.0).to(tl.float32)
            squares += x * x
        rstd = tl.rsqrt(tl.sum(squares, 0) / k + eps)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < k
        a = _activations(x_row, norm_weight_ptr, ks, k_mask, k, rstd, PROLOGUE)
        w = tl.load(
            weight_ptr + cols[:, None] * stride_w + ks[None, :],
            mask=col_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        acc += w.to(tl.float32) * a[None, :]
    y = tl.sum(acc, 1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    out = y.to(out_ptr.dtype.element_ty)
    if HAS_RESIDUAL:
        out = out + tl.load(residual_ptr + row * stride_r + cols, mask=col_mask, other=0.0)
    tl.store(out_ptr + row * stride_o + cols, out, mask=col_mask)


# One kernel per fusion, so a profile tells the projections apart by name. `rows` is not specialized
# (not even 1), so one compiled variant serves every batch width: the widths the decode graphs capture
# and the eager LM head and short prefills alike.


@triton.jit(do_not_specialize=["rows"])
def _gemv_kernel(
    x_ptr, weight_ptr, out_ptr, bias_ptr, residual_ptr, rows, n, k, stride_x, stride_w, stride_o, stride_r,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    _gemv_tile(
        x_ptr, weight_ptr, out_ptr, x_ptr, bias_ptr, residual_ptr, rows, n, k,
        stride_x, stride_w, stride_o, stride_r, 0.0, 0, HAS_BIAS, HAS_RESIDUAL, BLOCK_N, BLOCK_K,
    )  # fmt: skip


@triton.jit(do_not_specialize=["rows"])
def _rms_norm_gemv_kernel(
    x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, rows, n, k, stride_x, stride_w, stride_o, eps,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    _gemv_tile(
        x_ptr, weight_ptr, out_ptr, norm_weight_ptr, bias_ptr, x_ptr, rows, n, k,
        stride_x, stride_w, stride_o, 0, eps, 1, HAS_BIAS, False, BLOCK_N, BLOCK_K,
    )  # fmt: skip


@triton.jit(do_not_specialize=["rows"])
def _silu_mul_gemv_kernel(
    x_ptr, weight_ptr, out_ptr, residual_ptr, rows, n, k, stride_x, stride_w, stride_o, stride_r,
    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    _gemv_tile(
        x_ptr, weight_ptr, out_ptr, x_ptr, x_ptr, residual_ptr, rows, n, k,
        stride_x, stride_w, stride_o, stride_r, 0.0, 2, False, HAS_RESIDUAL, BLOCK_N, BLOCK_K,
    )  # fmt: skip


def tile_shape(n: int, k: int, sms: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K): the widest tile (at most 16 rows) whose tiles still cover every SM, and as
    much K per step as keeps TILE_ELEMENTS weight elements in flight."""
    block_n = MAX_BLOCK_N
    while block_n > 1 and triton.cdiv(n, block_n) < sms:
        block_n //= 2
    return block_n, min(triton.next_power_of_2(k), TILE_ELEMENTS // block_n)


def _launch(
    kernel: triton.JITFunction, x: Tensor, weight: Tensor, k: int, residual: Tensor | None, **args: object
) -> Tensor:
    """x [rows, k] (gate|up: [rows, 2k]) times weight [n, k]ᵀ -> [rows, n] in x's dtype."""
    assert weight.shape[1] == k and weight.stride(1) == 1, "the weight is [out, in] with rows contiguous"
    x = x if x.stride(-1) == 1 else x.contiguous()
    rows, n = x.shape[0], weight.shape[0]
    out = x.new_empty(rows, n)
    if rows == 0:
        return out
    block_n, block_k = tile_shape(n, k, num_sms(x.device))
    if residual is not None:
        args.update(residual_ptr=residual, stride_r=residual.stride(0), HAS_RESIDUAL=True)
    kernel[(triton.cdiv(n, block_n) * rows,)](
        x_ptr=x, weight_ptr=weight, out_ptr=out, rows=rows, n=n, k=k,
        stride_x=x.stride(0), stride_w=weight.stride(0), stride_o=out.stride(0), **args,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=8 if block_n * block_k >= TILE_ELEMENTS else 4,
    )  # fmt: skip
    return out


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """x Wᵀ (+ bias) (+ residual, added after rounding to x's dtype, as a separate add would)."""
    return _launch(
        _gemv_kernel, x, weight, x.shape[-1], residual, bias_ptr=x if bias is None else bias,
        residual_ptr=x, stride_r=0, HAS_BIAS=bias is not None, HAS_RESIDUAL=False,
    )  # fmt: skip


def rms_norm_linear(
    x: Tensor, norm_weight: Tensor, eps: float, weight: Tensor, bias: Tensor | None = None
) -> Tensor:
    """RMSNorm(x) Wᵀ (+ bias) without writing the normalised rows."""
    return _launch(
        _rms_norm_gemv_kernel, x, weight, x.shape[-1], None, norm_weight_ptr=norm_weight,
        bias_ptr=x if bias is None else bias, eps=eps, HAS_BIAS=bias is not None,
    )  # fmt: skip


def silu_mul_linear(gate_up: Tensor, weight: Tensor, residual: Tensor | None = None) -> Tensor:
    """(SiLU(gate) * up) Wᵀ (+ residual) from the fused gate|up projection's output [rows, 2k]."""
    return _launch(
        _silu_mul_gemv_kernel, gate_up, weight, gate_up.shape[-1] // 2, residual,
        residual_ptr=gate_up, stride_r=0, HAS_RESIDUAL=False,
    )  # fmt: skip
