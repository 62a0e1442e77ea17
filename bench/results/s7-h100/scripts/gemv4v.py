"""Experimental 4-bit GEMV variants (GPTQ layout, groups in row order), for timing against quant_gemv."""
import torch, triton
import triton.language as tl
from tokenmill.kernels.triton.gemv_fusion import row_inputs, row_rstd, store_row, Fusion, NO_FUSION
from tokenmill.kernels.triton.packed_int import OFFSET, offset_float, unpack_rows, zero_points


@triton.jit
def _words(w_ptr, k0, n, K, N, stride_wk, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    per_word: tl.constexpr = 32 // BITS
    rows = k0 // per_word + tl.arange(0, BLOCK_K // per_word)
    mask = (rows * per_word < K)[:, None] & (n < N)[None, :]
    return tl.load(w_ptr + rows[:, None] * stride_wk + n[None, :], mask=mask, other=0)


@triton.jit(do_not_specialize=["rows"])
def _v2_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr,
    rows, N, K, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """Whole K step at once: one load of its words, one of its activations; CHUNK rows per group slice."""
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    G: tl.constexpr = BLOCK_K // CHUNK
    acc = tl.zeros([CHUNK, BLOCK_N], tl.float32)
    words = _words(w_ptr, 0, n, K, N, stride_wk, BITS, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        if PREFETCH:
            following = _words(w_ptr, k0 + BLOCK_K, n, K, N, stride_wk, BITS, BLOCK_K)
        else:
            words = _words(w_ptr, k0, n, K, N, stride_wk, BITS, BLOCK_K)
        groups = (tl.minimum(k0, K - 1) + tl.arange(0, G) * CHUNK) // GROUP
        gmask = ((k0 + tl.arange(0, G) * CHUNK) < K)[:, None] & (n < N)[None, :]
        zeros = zero_points(zero_ptr, groups, n, gmask, stride_zg, BITS, ZERO_OFFSET)
        scales = tl.load(scale_ptr + groups[:, None] * stride_sg + n[None, :], mask=gmask, other=0.0).to(tl.float32)
        x = tl.trans(row_inputs(x_row, k0 + tl.arange(0, BLOCK_K), K, norm_weight_ptr, rstd, PROLOGUE))
        values = unpack_rows(words, BITS)
        q = tl.reshape(offset_float(values), [G, CHUNK, BLOCK_N])
        prod = (q - (OFFSET + zeros)[:, None, :]) * (tl.reshape(x, [G, CHUNK, 1]) * scales[:, None, :])
        acc += tl.sum(prod, 0)
        if PREFETCH:
            words = following
    y = tl.sum(acc, 0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def gemv_v2(x, weight, fusion: Fusion = NO_FUSION, block_n=32, block_k=256, prefetch=True, warps=4):
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    chunk = min(weight.group_size, block_k)
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _v2_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, w_ptr, scale_ptr, zero_ptr, out, rows=rows, N=n, K=k, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=chunk, PREFETCH=prefetch, num_warps=warps,
    )
    return out


@triton.jit(do_not_specialize=["rows"])
def _v3_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr,
    rows, N, K, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """[word rows, 8, BLOCK_N] tiles: each word's 8 values stay in its thread; one group per K step."""
    PER: tl.constexpr = 32 // BITS
    WR: tl.constexpr = BLOCK_K // PER
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    wr = tl.arange(0, WR)
    j = tl.arange(0, PER)
    shifts = (j * BITS)[None, :, None]
    acc = tl.zeros([WR, PER, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rows_w = k0 // PER + wr
        wmask = (rows_w * PER < K)[:, None] & (n < N)[None, :]
        words = tl.load(w_ptr + rows_w[:, None] * stride_wk + n[None, :], mask=wmask, other=0)
        kk = k0 + wr[:, None, None] * PER + j[None, :, None]
        kmask = kk < K
        x = tl.load(x_row + kk, mask=kmask, other=0.0).to(tl.float32)
        if PROLOGUE == 1:
            w_n = tl.load(norm_weight_ptr + kk, mask=kmask, other=0.0)
            x = (w_n * (x * rstd).to(x_ptr.dtype.element_ty)).to(tl.float32)
        elif PROLOGUE == 2:
            up = tl.load(x_row + K + kk, mask=kmask, other=0.0).to(tl.float32)
            x = (x * tl.sigmoid(x) * up).to(x_ptr.dtype.element_ty).to(tl.float32)
        group = tl.zeros([1], tl.int32) + tl.minimum(k0, K - 1) // GROUP
        zeros = zero_points(zero_ptr, group, n, (n < N)[None, :], stride_zg, BITS, ZERO_OFFSET)  # [1, BN]
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=(n < N)[None, :], other=0.0).to(tl.float32)
        q = offset_float((words[:, None, :] >> shifts) & ((1 << BITS) - 1))
        acc += (q - (OFFSET + zeros)[:, None, :]) * (x * scales[:, None, :])
    y = tl.sum(tl.sum(acc, 1), 0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def gemv_v3(x, weight, fusion: Fusion = NO_FUSION, block_n=32, block_k=128, warps=4):
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _v3_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, w_ptr, scale_ptr, zero_ptr, out, rows=rows, N=n, K=k, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=block_k, PREFETCH=False, num_warps=warps,
    )
    return out


_ASM_BF16 = tl.constexpr("""
{
.reg .b32 t0, t1, t2, t3, w4, w8, w12, xa, xb, xc, xd, acc, one;
.reg .b16 l16, h16;
.reg .f32 lo, hi;
mov.b32 one, 0x3f803f80;
shr.u32 w4, $1, 4;
shr.u32 w8, $1, 8;
shr.u32 w12, $1, 12;
lop3.b32 t0, $1, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t1, w4, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t2, w8, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t3, w12, 0x000f000f, 0x43004300, 0xea;
fma.rn.bf16x2 t0, t0, one, $2;
fma.rn.bf16x2 t1, t1, one, $2;
fma.rn.bf16x2 t2, t2, one, $2;
fma.rn.bf16x2 t3, t3, one, $2;
mov.b32 xa, {$3, $7};
mov.b32 xb, {$4, $8};
mov.b32 xc, {$5, $9};
mov.b32 xd, {$6, $10};
mov.b32 acc, 0x80008000;
fma.rn.bf16x2 acc, t0, xa, acc;
fma.rn.bf16x2 acc, t1, xb, acc;
fma.rn.bf16x2 acc, t2, xc, acc;
fma.rn.bf16x2 acc, t3, xd, acc;
mov.b32 {l16, h16}, acc;
cvt.f32.bf16 lo, l16;
cvt.f32.bf16 hi, h16;
add.f32 $0, lo, hi;
}
""")


@triton.jit
def _x_at(x_row, k, K, norm_weight_ptr, rstd, PROLOGUE: tl.constexpr):
    """[WR, 1] activations at k (after the prologue), in the activation dtype."""
    mask = k < K
    x = tl.load(x_row + k, mask=mask, other=0.0)
    dtype = x.dtype
    xf = x.to(tl.float32)
    if PROLOGUE == 1:
        w_n = tl.load(norm_weight_ptr + k, mask=mask, other=0.0)
        xf = (w_n * (xf * rstd).to(dtype)).to(tl.float32)
    elif PROLOGUE == 2:
        up = tl.load(x_row + K + k, mask=mask, other=0.0).to(tl.float32)
        xf = xf * tl.sigmoid(xf) * up
    return xf.to(dtype)


@triton.jit(do_not_specialize=["rows"])
def _v5_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr,
    rows, N, K, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """4-bit, bf16 activations: each word's 8 values times x in bf16x2 inline assembly; one group per K step."""
    WR: tl.constexpr = BLOCK_K // 8
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    wr = tl.arange(0, WR)
    acc = tl.zeros([WR, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rows_w = k0 // 8 + wr
        words = tl.load(w_ptr + rows_w[:, None] * stride_wk + n[None, :], mask=(n < N)[None, :], other=0)
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        zeros = zero_points(zero_ptr, group, n, (n < N)[None, :], stride_zg, BITS, ZERO_OFFSET)  # [1, BN] f32
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=(n < N)[None, :], other=0.0).to(tl.float32)
        neg = (-(128.0 + zeros)).to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        neg2 = neg | (neg << 16)
        base = k0 + wr[:, None] * 8
        x0 = _x_at(x_row, base + 0, K, norm_weight_ptr, rstd, PROLOGUE)
        x1 = _x_at(x_row, base + 1, K, norm_weight_ptr, rstd, PROLOGUE)
        x2 = _x_at(x_row, base + 2, K, norm_weight_ptr, rstd, PROLOGUE)
        x3 = _x_at(x_row, base + 3, K, norm_weight_ptr, rstd, PROLOGUE)
        x4 = _x_at(x_row, base + 4, K, norm_weight_ptr, rstd, PROLOGUE)
        x5 = _x_at(x_row, base + 5, K, norm_weight_ptr, rstd, PROLOGUE)
        x6 = _x_at(x_row, base + 6, K, norm_weight_ptr, rstd, PROLOGUE)
        x7 = _x_at(x_row, base + 7, K, norm_weight_ptr, rstd, PROLOGUE)
        part = tl.inline_asm_elementwise(
            _ASM_BF16, "=r,r,r,h,h,h,h,h,h,h,h",
            [words, tl.broadcast_to(neg2, [WR, BLOCK_N]),
             tl.broadcast_to(x0, [WR, BLOCK_N]), tl.broadcast_to(x1, [WR, BLOCK_N]),
             tl.broadcast_to(x2, [WR, BLOCK_N]), tl.broadcast_to(x3, [WR, BLOCK_N]),
             tl.broadcast_to(x4, [WR, BLOCK_N]), tl.broadcast_to(x5, [WR, BLOCK_N]),
             tl.broadcast_to(x6, [WR, BLOCK_N]), tl.broadcast_to(x7, [WR, BLOCK_N])],
            dtype=tl.float32, is_pure=True, pack=1)
        acc += part * scales
    y = tl.sum(acc, 0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def gemv_v5(x, weight, fusion: Fusion = NO_FUSION, block_n=64, block_k=128, warps=4):
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _v5_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, w_ptr, scale_ptr, zero_ptr, out, rows=rows, N=n, K=k, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=block_k, PREFETCH=False, num_warps=warps,
    )
    return out


gemv_v5.configs = [dict(block_n=bn, block_k=bk, warps=w) for bn, bk, w in
                   [(32, 128, 4), (64, 128, 4), (128, 128, 4), (64, 128, 8), (128, 128, 8), (16, 128, 4)]]


_ASM6 = tl.constexpr("""
{
.reg .b32 t0, t1, t2, t3, w4, w8, w12, acc, one;
.reg .b16 l16, h16;
.reg .f32 lo, hi;
mov.b32 one, 0x3f803f80;
shr.u32 w4, $1, 4;
shr.u32 w8, $1, 8;
shr.u32 w12, $1, 12;
lop3.b32 t0, $1, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t1, w4, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t2, w8, 0x000f000f, 0x43004300, 0xea;
lop3.b32 t3, w12, 0x000f000f, 0x43004300, 0xea;
fma.rn.bf16x2 t0, t0, one, $2;
fma.rn.bf16x2 t1, t1, one, $2;
fma.rn.bf16x2 t2, t2, one, $2;
fma.rn.bf16x2 t3, t3, one, $2;
mov.b32 acc, 0x80008000;
fma.rn.bf16x2 acc, t0, $3, acc;
fma.rn.bf16x2 acc, t1, $4, acc;
fma.rn.bf16x2 acc, t2, $5, acc;
fma.rn.bf16x2 acc, t3, $6, acc;
mov.b32 {l16, h16}, acc;
cvt.f32.bf16 lo, l16;
cvt.f32.bf16 hi, h16;
add.f32 $0, lo, hi;
}
""")


@triton.jit
def _bits16(x):
    return x.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit(do_not_specialize=["rows"])
def _v6_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr,
    rows, N, K, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """As v5, the activations of a K step computed once as [WR, 8] and packed into bf16 pairs (i, i+4)."""
    WR: tl.constexpr = BLOCK_K // 8
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    wr = tl.arange(0, WR)
    acc = tl.zeros([WR, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rows_w = k0 // 8 + wr
        words = tl.load(w_ptr + rows_w[:, None] * stride_wk + n[None, :], mask=(n < N)[None, :], other=0)
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        zeros = zero_points(zero_ptr, group, n, (n < N)[None, :], stride_zg, BITS, ZERO_OFFSET)
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=(n < N)[None, :], other=0.0).to(tl.float32)
        neg = _bits16((-(128.0 + zeros)).to(tl.bfloat16))
        neg2 = neg | (neg << 16)
        xs = row_inputs(x_row, k0 + tl.arange(0, BLOCK_K), K, norm_weight_ptr, rstd, PROLOGUE)  # [1, BK] f32
        xs = tl.reshape(xs.to(tl.bfloat16), [WR, 2, 4])
        lo, hi = tl.split(tl.permute(xs, (0, 2, 1)))  # [WR, 4]: x[8w + i], x[8w + i + 4]
        pairs = _bits16(lo) | (_bits16(hi) << 16)
        p01, p23 = tl.split(tl.reshape(pairs, [WR, 2, 2]))  # [WR, 2]: (0, 2), (1, 3)
        pa, pc = tl.split(p01)
        pb, pd = tl.split(p23)
        shape: tl.constexpr = [WR, BLOCK_N]
        part = tl.inline_asm_elementwise(
            _ASM6, "=r,r,r,r,r,r,r",
            [words, tl.broadcast_to(neg2, shape), tl.broadcast_to(pa[:, None], shape),
             tl.broadcast_to(pb[:, None], shape), tl.broadcast_to(pc[:, None], shape),
             tl.broadcast_to(pd[:, None], shape)],
            dtype=tl.float32, is_pure=True, pack=1)
        acc += part * scales
    y = tl.sum(acc, 0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def gemv_v6(x, weight, fusion: Fusion = NO_FUSION, block_n=64, block_k=128, warps=4):
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _v6_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, w_ptr, scale_ptr, zero_ptr, out, rows=rows, N=n, K=k, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=block_k, PREFETCH=False, num_warps=warps,
    )
    return out


gemv_v6.configs = [dict(block_n=bn, block_k=bk, warps=w) for bn, bk, w in
                   [(32, 128, 4), (64, 128, 4), (128, 128, 4), (64, 128, 8), (128, 128, 8), (16, 128, 4)]]


@triton.jit(do_not_specialize=["rows"])
def _v7_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr,
    rows, N, K, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PREFETCH: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """v6 with the next K step's words loaded before this one's arithmetic; the activations of a K step computed once as [WR, 8] and packed into bf16 pairs (i, i+4)."""
    WR: tl.constexpr = BLOCK_K // 8
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    wr = tl.arange(0, WR)
    acc = tl.zeros([WR, BLOCK_N], tl.float32)
    words = tl.load(w_ptr + wr[:, None] * stride_wk + n[None, :], mask=(n < N)[None, :], other=0)
    for k0 in range(0, K, BLOCK_K):
        rows_w = (k0 + BLOCK_K) // 8 + wr
        following = tl.load(w_ptr + rows_w[:, None] * stride_wk + n[None, :], mask=(n < N)[None, :] & (rows_w * 8 < K)[:, None], other=0)
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        zeros = zero_points(zero_ptr, group, n, (n < N)[None, :], stride_zg, BITS, ZERO_OFFSET)
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=(n < N)[None, :], other=0.0).to(tl.float32)
        neg = _bits16((-(128.0 + zeros)).to(tl.bfloat16))
        neg2 = neg | (neg << 16)
        xs = row_inputs(x_row, k0 + tl.arange(0, BLOCK_K), K, norm_weight_ptr, rstd, PROLOGUE)  # [1, BK] f32
        xs = tl.reshape(xs.to(tl.bfloat16), [WR, 2, 4])
        lo, hi = tl.split(tl.permute(xs, (0, 2, 1)))  # [WR, 4]: x[8w + i], x[8w + i + 4]
        pairs = _bits16(lo) | (_bits16(hi) << 16)
        p01, p23 = tl.split(tl.reshape(pairs, [WR, 2, 2]))  # [WR, 2]: (0, 2), (1, 3)
        pa, pc = tl.split(p01)
        pb, pd = tl.split(p23)
        shape: tl.constexpr = [WR, BLOCK_N]
        part = tl.inline_asm_elementwise(
            _ASM6, "=r,r,r,r,r,r,r",
            [words, tl.broadcast_to(neg2, shape), tl.broadcast_to(pa[:, None], shape),
             tl.broadcast_to(pb[:, None], shape), tl.broadcast_to(pc[:, None], shape),
             tl.broadcast_to(pd[:, None], shape)],
            dtype=tl.float32, is_pure=True, pack=1)
        acc += part * scales
        words = following
    y = tl.sum(acc, 0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def gemv_v7(x, weight, fusion: Fusion = NO_FUSION, block_n=64, block_k=128, warps=4):
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _v7_kernel[(triton.cdiv(n, block_n) * rows,)](
        x, w_ptr, scale_ptr, zero_ptr, out, rows=rows, N=n, K=k, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=block_k, PREFETCH=False, num_warps=warps,
    )
    return out


gemv_v7.configs = [dict(block_n=bn, block_k=128, warps=w) for bn, w in [(32, 4), (64, 4), (128, 4), (64, 8), (128, 8)]]


@triton.jit(do_not_specialize=["rows"])
def _v8_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, part_ptr, sem_ptr,
    rows, N, K, k_per_split, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    BITS: tl.constexpr, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """v6 split along K: each split stores its fp32 sums; the last split of a (tile, row) to finish adds
    them in split order and runs the epilogue."""
    WR: tl.constexpr = BLOCK_K // 8
    pid = tl.program_id(0)
    split = pid % SPLIT
    tile_row = pid // SPLIT
    tile, row = tile_row // rows, tile_row % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    wr = tl.arange(0, WR)
    acc = tl.zeros([WR, BLOCK_N], tl.float32)
    k_start = split * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    for k0 in range(k_start, k_end, BLOCK_K):
        rows_w = k0 // 8 + wr
        words = tl.load(w_ptr + rows_w[:, None] * stride_wk + n[None, :], mask=(n < N)[None, :], other=0)
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        zeros = zero_points(zero_ptr, group, n, (n < N)[None, :], stride_zg, BITS, ZERO_OFFSET)
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=(n < N)[None, :], other=0.0).to(tl.float32)
        neg = _bits16((-(128.0 + zeros)).to(tl.bfloat16))
        neg2 = neg | (neg << 16)
        xs = row_inputs(x_row, k0 + tl.arange(0, BLOCK_K), K, norm_weight_ptr, rstd, PROLOGUE)
        xs = tl.reshape(xs.to(tl.bfloat16), [WR, 2, 4])
        lo, hi = tl.split(tl.permute(xs, (0, 2, 1)))
        pairs = _bits16(lo) | (_bits16(hi) << 16)
        p01, p23 = tl.split(tl.reshape(pairs, [WR, 2, 2]))
        pa, pc = tl.split(p01)
        pb, pd = tl.split(p23)
        shape: tl.constexpr = [WR, BLOCK_N]
        part = tl.inline_asm_elementwise(
            _ASM6, "=r,r,r,r,r,r,r",
            [words, tl.broadcast_to(neg2, shape), tl.broadcast_to(pa[:, None], shape),
             tl.broadcast_to(pb[:, None], shape), tl.broadcast_to(pc[:, None], shape),
             tl.broadcast_to(pd[:, None], shape)],
            dtype=tl.float32, is_pure=True, pack=1)
        acc += part * scales
    y = tl.sum(acc, 0)
    if SPLIT == 1:
        store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)
    else:
        parts = part_ptr + (tile_row * SPLIT) * BLOCK_N + tl.arange(0, BLOCK_N)
        tl.store(parts + split * BLOCK_N, y)
        tl.debug_barrier()
        done = tl.atomic_add(sem_ptr + tile_row, 1, sem="acq_rel")
        if done == SPLIT - 1:
            total = tl.zeros([BLOCK_N], tl.float32)
            for s in tl.static_range(SPLIT):
                total += tl.load(parts + s * BLOCK_N, cache_modifier=".cg")
            store_row(total, out_ptr, bias_ptr, residual_ptr, row, n, n < N, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)
            tl.atomic_xchg(sem_ptr + tile_row, 0)


_SCRATCH = {}


def gemv_v8(x, weight, fusion: Fusion = NO_FUSION, block_n=64, block_k=128, warps=4, split=4):
    rows, k = x.shape[0], fusion.in_features(x)
    n = weight.out_features
    out = x.new_empty(rows, n)
    tiles = triton.cdiv(n, block_n)
    key = (x.device, tiles * rows * split * block_n)
    if key not in _SCRATCH:
        _SCRATCH[key] = (torch.empty(tiles * rows * split * block_n, dtype=torch.float32, device=x.device),
                         torch.zeros(tiles * rows, dtype=torch.int32, device=x.device))
    part, sem = _SCRATCH[key]
    k_per_split = triton.cdiv(triton.cdiv(k, split), block_k) * block_k
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _v8_kernel[(tiles * rows * split,)](
        x, w_ptr, scale_ptr, zero_ptr, out, part_ptr=part, sem_ptr=sem, rows=rows, N=n, K=k,
        k_per_split=k_per_split, stride_x=x.stride(0),
        stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg, stride_o=out.stride(0),
        **fusion.kernel_args(x), BITS=weight.bits, ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        SPLIT=split, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
    )
    return out


gemv_v8.configs = [dict(block_n=bn, split=s, warps=4) for bn, s in
                   [(32, 1), (32, 2), (32, 4), (64, 2), (64, 4), (64, 8), (16, 4), (32, 8), (128, 4), (128, 8)]]
