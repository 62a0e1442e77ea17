"""Session 8 GEMV variants for .k3/rot.py: software prefetch of the next K step (weights, scales, activations)."""
import triton
import triton.language as tl
from tokenmill.kernels.triton import int4_gemv as m
from tokenmill.kernels.triton import quant_gemv as q
from tokenmill.kernels.triton.gemv_fusion import row_rstd, split_count, split_scratch, store_split_row, store_row
from tokenmill.kernels.triton.packed_int import zero_points
from tokenmill.kernels.triton.split_k import num_sms
from tokenmill.kernels.triton import gemv_fusion


@triton.jit
def _raw(x_row, k, K, norm_weight_ptr, PROLOGUE: tl.constexpr):
    km = k < K
    a = tl.load(x_row + k[None, :], mask=km[None, :], other=0.0)
    if PROLOGUE == 1:
        b = tl.load(norm_weight_ptr + k, mask=km, other=0.0)[None, :]
    elif PROLOGUE == 2:
        b = tl.load(x_row + K + k[None, :], mask=km[None, :], other=0.0)
    else:
        b = a
    return a, b


@triton.jit
def _finish(a, b, rstd, PROLOGUE: tl.constexpr):
    dtype = a.dtype
    x = a.to(tl.float32)
    if PROLOGUE == 1:
        x = (b * (x * rstd).to(dtype)).to(tl.float32)
    elif PROLOGUE == 2:
        x = (x * tl.sigmoid(x) * b.to(tl.float32)).to(dtype).to(tl.float32)
    return x


@triton.jit
def _i4_step(w_ptr, zero_ptr, scale_ptr, k0, n, n_mask, word_rows, stride_wk, stride_zg, stride_sg, live,
             GROUP: tl.constexpr, ZERO_OFFSET: tl.constexpr):
    words = tl.load(w_ptr + (k0 // 8 + word_rows)[:, None] * stride_wk + n[None, :], mask=n_mask & (tl.zeros([1, 1], tl.int32) + live.to(tl.int32) > 0), other=0)
    group = tl.zeros([1], tl.int32) + k0 // GROUP
    zeros = zero_points(zero_ptr, group, n, n_mask, stride_zg, 4, ZERO_OFFSET)
    scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=n_mask, other=0.0)
    return words, zeros, scales


@triton.jit(do_not_specialize=["rows"])
def _int4_pf_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr,
    count_ptr, rows, N, K, k_per_split, stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, USE_ASM: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, RSTD_FIRST: tl.constexpr,
):
    WORD_ROWS: tl.constexpr = BLOCK_K // 8
    pid = tl.program_id(0)
    split, tile_row = pid % SPLIT, pid // SPLIT
    tile, row = tile_row // rows, tile_row % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = (n < N)[None, :]
    x_row = x_ptr + row * stride_x
    word_rows = tl.arange(0, WORD_ROWS)
    k_start = split * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    words, zeros, scales = _i4_step(w_ptr, zero_ptr, scale_ptr, k_start, n, n_mask, word_rows, stride_wk,
                                    stride_zg, stride_sg, k_start < K, GROUP, ZERO_OFFSET)
    a, b = _raw(x_row, k_start + tl.arange(0, BLOCK_K), K, norm_weight_ptr, PROLOGUE)
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([WORD_ROWS, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        nxt = k0 + BLOCK_K
        live = nxt < k_end
        nk = tl.minimum(nxt, k_end - BLOCK_K)
        words2, zeros2, scales2 = _i4_step(w_ptr, zero_ptr, scale_ptr, nk, n, n_mask, word_rows, stride_wk,
                                           stride_zg, stride_sg, live, GROUP, ZERO_OFFSET)
        a2, b2 = _raw(x_row, nk + tl.arange(0, BLOCK_K), K, norm_weight_ptr, PROLOGUE)
        x = _finish(a, b, rstd, PROLOGUE)
        lo, hi = tl.split(tl.permute(tl.reshape(x, [WORD_ROWS, 2, 4]), (0, 2, 1)))
        acc += m._word_sums(words, zeros, lo, hi, WORD_ROWS, BLOCK_N, USE_ASM) * scales.to(tl.float32)
        words, zeros, scales, a, b = words2, zeros2, scales2, a2, b2
    store_split_row(tl.sum(acc, 0), out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr,
                    row, n, n < N, stride_o, stride_r, SPLIT, BLOCK_N, HAS_BIAS, HAS_RESIDUAL)


def int4_pf(x, weight, fusion, block_n=64, warps=4, per_sm=4):
    rows, k, n = x.shape[0], fusion.in_features(x), weight.out_features
    out = x.new_empty(rows, n)
    tiles = triton.cdiv(n, block_n)
    old = gemv_fusion.SPLIT_PROGRAMS_PER_SM
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = per_sm
    split = split_count(tiles, k, m.BLOCK_K, block_n, num_sms(x.device))
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = old
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _int4_pf_kernel[(tiles * rows * split,)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, out_ptr=out, **split_scratch(x.device),
        rows=rows, N=n, K=k, k_per_split=triton.cdiv(triton.cdiv(k, split), m.BLOCK_K) * m.BLOCK_K,
        stride_x=x.stride(0), stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg,
        stride_o=out.stride(0), **fusion.kernel_args(x), ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        SPLIT=split, BLOCK_N=block_n, BLOCK_K=m.BLOCK_K, USE_ASM=m._uses_asm(x), RSTD_FIRST=False, num_warps=warps)
    return out


int4_pf.configs = [dict(block_n=b, warps=w, per_sm=p) for b, w, p in [(64, 4, 4), (64, 4, 2), (64, 4, 8), (128, 4, 4), (32, 4, 4)]]


@triton.jit(do_not_specialize=["rows"])
def _byte_pf_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, N, K,
    stride_x, stride_w, stride_o, stride_r, eps,
    FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
    DIST: tl.constexpr,
):
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    ks = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + n[:, None] * stride_w
    w1 = tl.load(w_rows + ks[None, :], mask=n_mask[:, None] & (ks < K)[None, :], other=0)
    a1, b1 = _raw(x_row, ks, K, norm_weight_ptr, PROLOGUE)
    if DIST == 2:
        w2 = tl.load(w_rows + BLOCK_K + ks[None, :], mask=n_mask[:, None] & (BLOCK_K + ks < K)[None, :], other=0)
        a2, b2 = _raw(x_row, BLOCK_K + ks, K, norm_weight_ptr, PROLOGUE)
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kn = k0 + DIST * BLOCK_K + ks
        w3 = tl.load(w_rows + kn[None, :], mask=n_mask[:, None] & (kn < K)[None, :], other=0)
        a3, b3 = _raw(x_row, kn, K, norm_weight_ptr, PROLOGUE)
        x = _finish(a1, b1, rstd, PROLOGUE)
        acc += q._decode_bytes(w1, FORMAT, NATIVE_FP8) * x
        if DIST == 2:
            w1, a1, b1 = w2, a2, b2
            w2, a2, b2 = w3, a3, b3
        else:
            w1, a1, b1 = w3, a3, b3
    y = tl.sum(acc, 1) * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def byte_pf(x, weight, fusion, block_n=32, block_k=256, warps=8, dist=1):
    rows, k = x.shape[0], fusion.in_features(x)
    w = weight.weight
    n = w.shape[0]
    out = x.new_empty(rows, n)
    is_int8 = weight.format == 0
    _byte_pf_kernel[(triton.cdiv(n, block_n) * rows,)](
        x_ptr=x, w_ptr=w.view(torch_uint8()) if not is_int8 else w, scale_ptr=weight.scales, out_ptr=out,
        rows=rows, N=n, K=k, stride_x=x.stride(0), stride_w=w.stride(0), stride_o=out.stride(0),
        **fusion.kernel_args(x), FORMAT=int(weight.format), NATIVE_FP8=True, BLOCK_N=block_n, BLOCK_K=block_k,
        DIST=dist, num_warps=warps)
    return out


def torch_uint8():
    import torch
    return torch.uint8


byte_pf.configs = [dict(block_n=b, block_k=k, warps=w, dist=d) for b, k, w, d in [
    (32, 256, 8, 1), (32, 256, 8, 2), (16, 512, 4, 1), (16, 512, 4, 2), (16, 256, 4, 2), (32, 512, 8, 1),
    (8, 1024, 4, 1), (16, 1024, 8, 1)]]


@triton.jit
def _raw2d(x_row, n, k, K, norm_weight_ptr, PROLOGUE: tl.constexpr):
    """The activations loaded in the weight tile's own [BLOCK_N, len(k)] shape (every row the same
    addresses: L1 hits), so no layout conversion through shared memory."""
    zero = (n * 0)[:, None]
    km = (zero + k[None, :]) < K
    a = tl.load(x_row + zero + k[None, :], mask=km, other=0.0)
    if PROLOGUE == 1:
        b = tl.load(norm_weight_ptr + zero + k[None, :], mask=km, other=0.0)
    elif PROLOGUE == 2:
        b = tl.load(x_row + K + zero + k[None, :], mask=km, other=0.0)
    else:
        b = a
    return a, b


@triton.jit(do_not_specialize=["rows"])
def _byte_x2d_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, N, K,
    stride_x, stride_w, stride_o, stride_r, eps,
    FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    CHUNK: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    NORM_BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    tile, row = pid // rows, pid % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([BLOCK_N, CHUNK], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            k = k0 + c * CHUNK + tl.arange(0, CHUNK)
            stored = tl.load(w_ptr + n[:, None] * stride_w + k[None, :], mask=n_mask[:, None] & (k < K)[None, :], other=0)
            a, b = _raw2d(x_row, n, k, K, norm_weight_ptr, PROLOGUE)
            x = _finish(a, b, rstd, PROLOGUE)
            acc += q._decode_bytes(stored, FORMAT, NATIVE_FP8) * x
    y = tl.sum(acc, 1) * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def byte_x2d(x, weight, fusion, block_n=32, block_k=1024, chunk=256, warps=8):
    import torch
    rows, k = x.shape[0], fusion.in_features(x)
    w = weight.weight
    n = w.shape[0]
    out = x.new_empty(rows, n)
    is_int8 = weight.format == 0
    _byte_x2d_kernel[(triton.cdiv(n, block_n) * rows,)](
        x_ptr=x, w_ptr=w.view(torch.uint8) if not is_int8 else w, scale_ptr=weight.scales, out_ptr=out,
        rows=rows, N=n, K=k, stride_x=x.stride(0), stride_w=w.stride(0), stride_o=out.stride(0),
        **fusion.kernel_args(x), FORMAT=int(weight.format), NATIVE_FP8=True, BLOCK_N=block_n, BLOCK_K=block_k,
        CHUNK=chunk, num_warps=warps)
    return out


byte_x2d.configs = [dict(block_n=b, block_k=k, chunk=c, warps=w) for b, k, c, w in [
    (32, 1024, 256, 8), (32, 1024, 256, 4), (16, 1024, 256, 4), (16, 2048, 256, 4), (32, 2048, 256, 8),
    (16, 1024, 512, 4), (8, 2048, 512, 4), (32, 512, 256, 4)]]


from tokenmill.kernels.triton.gemv_rows import prologue_activations, rows_rstd
from tokenmill.kernels.triton.packed_int import unpack_rows, as_half_offset


@triton.jit
def _store_rows(acc, out_ptr, bias_ptr, residual_ptr, row_ids, row_mask, n, n_mask, stride_o, stride_r,
                HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = acc.to(out_ptr.dtype.element_ty)
    mask = row_mask[:, None] & n_mask[None, :]
    if HAS_RESIDUAL:
        out = out + tl.load(residual_ptr + row_ids[:, None] * stride_r + n[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + row_ids[:, None] * stride_o + n[None, :], out, mask=mask)


@triton.jit(do_not_specialize=["rows"])
def _byte_dot_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, N, K,
    stride_x, stride_w, stride_o, stride_r, eps,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, STAGES: tl.constexpr, ACT_FP8: tl.constexpr,
):
    """fp8 (per-channel) GEMV on the tensor cores: 16 token rows (the real ones masked in), weights
    [BLOCK_N, BLOCK_K] e4m3 straight into the dot; ACT_FP8: activations quantized per (row, BLOCK_K chunk)."""
    tile = tl.program_id(0)
    row_ids = tl.arange(0, 16)
    row_mask = row_ids < rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_rows = x_ptr + row_ids[:, None] * stride_x
    rstd1 = row_rstd(x_ptr, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([16, BLOCK_N], tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        ks = k0 + tl.arange(0, BLOCK_K)
        km = ks < K
        w = tl.load(w_ptr + n[:, None] * stride_w + ks[None, :], mask=n_mask[:, None] & km[None, :], other=0)
        w = w.to(tl.float8e4nv, bitcast=True)
        a1 = prologue_activations(x_ptr + ks[None, :], km[None, :], K, norm_weight_ptr + ks, km, rstd1, PROLOGUE)
        if ACT_FP8:
            xs = tl.maximum(tl.max(tl.abs(a1)), 1e-30) / 448.0
            a = tl.where(row_ids[:, None] == 0, (a1 / xs).to(tl.float8e4nv), tl.zeros([1, 1], tl.float8e4nv))
            acc += tl.dot(a, tl.trans(w)) * xs
        else:
            a = tl.where(row_ids[:, None] == 0, a1, 0.0)
            acc = tl.dot(a.to(tl.bfloat16), tl.trans(w.to(tl.bfloat16)), acc)
    acc = acc * tl.load(scale_ptr + n, mask=n_mask, other=0.0)[None, :]
    _store_rows(acc, out_ptr, bias_ptr, residual_ptr, row_ids, row_mask, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def byte_dot(x, weight, fusion, block_n=32, block_k=128, warps=4, stages=4, act_fp8=True):
    import torch
    rows, k = x.shape[0], fusion.in_features(x)
    w = weight.weight
    n = w.shape[0]
    out = x.new_empty(rows, n)
    _byte_dot_kernel[(triton.cdiv(n, block_n),)](
        x_ptr=x, w_ptr=w.view(torch.uint8), scale_ptr=weight.scales, out_ptr=out,
        rows=rows, N=n, K=k, stride_x=x.stride(0), stride_w=w.stride(0), stride_o=out.stride(0),
        **fusion.kernel_args(x), BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages, ACT_FP8=act_fp8, num_warps=warps)
    return out


byte_dot.configs = [dict(block_n=b, block_k=k, warps=w, stages=s, act_fp8=a) for b, k, w, s, a in [
    (32, 128, 4, 4, True), (16, 128, 4, 4, True), (16, 256, 4, 4, True), (32, 256, 4, 3, True), (16, 256, 4, 6, True),
    (64, 128, 4, 4, True), (16, 512, 4, 3, True), (16, 256, 4, 4, False), (32, 128, 4, 4, False)]]


@triton.jit(do_not_specialize=["rows"])
def _int4_dot_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, rows, N, K,
    stride_x, stride_wk, stride_sg, stride_zg, stride_o, stride_r, eps,
    ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
    STAGES: tl.constexpr,
):
    """GPTQ-layout 4-bit GEMV on the tensor cores: q - zero exact in bf16 (128 + q via the mantissa),
    one group (BLOCK_K = GROUP rows or a divisor) per dot, times its scale in fp32."""
    tile = tl.program_id(0)
    row_ids = tl.arange(0, 16)
    row_mask = row_ids < rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_rows = x_ptr + row_ids[:, None] * stride_x
    rstd1 = row_rstd(x_ptr, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([16, BLOCK_N], tl.float32)
    word_rows = tl.arange(0, BLOCK_K // 8)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        ks = k0 + tl.arange(0, BLOCK_K)
        km = ks < K
        a1 = prologue_activations(x_ptr + ks[None, :], km[None, :], K, norm_weight_ptr + ks, km, rstd1, PROLOGUE)
        a = tl.where(row_ids[:, None] == 0, a1, 0.0)
        words = tl.load(w_ptr + (k0 // 8 + word_rows)[:, None] * stride_wk + n[None, :], mask=n_mask[None, :], other=0)
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        zeros = zero_points(zero_ptr, group, n, n_mask[None, :], stride_zg, 4, ZERO_OFFSET)
        scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=n_mask[None, :], other=0.0)
        wq = as_half_offset(unpack_rows(words, 4), 0x4300, tl.bfloat16)
        w = wq - (128.0 + zeros).to(tl.bfloat16)
        acc += tl.dot(a.to(tl.bfloat16), w) * scales.to(tl.float32)
    _store_rows(acc, out_ptr, bias_ptr, residual_ptr, row_ids, row_mask, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)


def int4_dot(x, weight, fusion, block_n=64, block_k=128, warps=4, stages=4):
    rows, k, n = x.shape[0], fusion.in_features(x), weight.out_features
    out = x.new_empty(rows, n)
    w_ptr, scale_ptr, zero_ptr, _ = weight.pointers()
    _, _, stride_sg, stride_zg = weight.strides()
    _int4_dot_kernel[(triton.cdiv(n, block_n),)](
        x_ptr=x, w_ptr=w_ptr, scale_ptr=scale_ptr, zero_ptr=zero_ptr, out_ptr=out, rows=rows, N=n, K=k,
        stride_x=x.stride(0), stride_wk=weight.weight.stride(0), stride_sg=stride_sg, stride_zg=stride_zg,
        stride_o=out.stride(0), **fusion.kernel_args(x), ZERO_OFFSET=weight.zero_offset, GROUP=weight.group_size,
        BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages, num_warps=warps)
    return out


int4_dot.configs = [dict(block_n=b, block_k=k, warps=w, stages=s) for b, k, w, s in [
    (64, 128, 4, 4), (32, 128, 4, 4), (16, 128, 4, 4), (32, 128, 4, 6), (64, 128, 8, 4), (128, 128, 4, 3), (32, 64, 4, 6)]]


@triton.jit(do_not_specialize=["rows"])
def _byte_split_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr,
    rows, N, K, k_per_split, stride_x, stride_w, stride_o, stride_r, eps,
    FORMAT: tl.constexpr, NATIVE_FP8: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    CHUNK: tl.constexpr, SPLIT: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    """Split K, the RMSNorm deferred: each split sums w * (norm_weight * x) and its part of sum(x^2);
    the last split to arrive adds both in split order and multiplies by rstd."""
    pid = tl.program_id(0)
    split, tile_row = pid % SPLIT, pid // SPLIT
    tile, row = tile_row // rows, tile_row % rows
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    acc = tl.zeros([BLOCK_N, CHUNK], tl.float32)
    sq = tl.zeros([1, CHUNK], tl.float32)
    k_start = split * k_per_split
    for k0 in range(k_start, tl.minimum(k_start + k_per_split, K), BLOCK_K):
        for c in tl.static_range(BLOCK_K // CHUNK):
            k = k0 + c * CHUNK + tl.arange(0, CHUNK)
            km = k < K
            stored = tl.load(w_ptr + n[:, None] * stride_w + k[None, :], mask=n_mask[:, None] & km[None, :], other=0)
            xv = tl.load(x_row + k[None, :], mask=km[None, :], other=0.0).to(tl.float32)
            if PROLOGUE == 1:
                sq += xv * xv
                xv = xv * tl.load(norm_weight_ptr + k, mask=km, other=0.0).to(tl.float32)[None, :]
            elif PROLOGUE == 2:
                up = tl.load(x_row + K + k[None, :], mask=km[None, :], other=0.0).to(tl.float32)
                xv = (xv * tl.sigmoid(xv) * up).to(x_ptr.dtype.element_ty).to(tl.float32)
            acc += q._decode_bytes(stored, FORMAT, NATIVE_FP8) * xv
    y = tl.sum(acc, 1)
    sq_total = tl.sum(sq, 1)  # [1]
    if SPLIT == 1:
        if PROLOGUE == 1:
            y = y * tl.rsqrt(sq_total / K + eps)
        y = y * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
        store_row(y, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)
    else:
        partials = partial_ptr + tile_row * SPLIT * (BLOCK_N + 1) + tl.arange(0, BLOCK_N)
        tl.store(partials + split * (BLOCK_N + 1), y)
        sq_ptr = partial_ptr + tile_row * SPLIT * (BLOCK_N + 1) + split * (BLOCK_N + 1) + BLOCK_N + tl.arange(0, 1)
        tl.store(sq_ptr, sq_total)
        tl.debug_barrier()
        if tl.atomic_add(count_ptr + tile_row, 1, sem="acq_rel") == SPLIT - 1:
            total = tl.zeros([BLOCK_N], tl.float32)
            sqs = tl.zeros([1], tl.float32)
            for s in tl.static_range(SPLIT):
                total += tl.load(partials + s * (BLOCK_N + 1), cache_modifier=".cg")
                sqs += tl.load(partials + s * (BLOCK_N + 1) + BLOCK_N - tl.arange(0, BLOCK_N) + tl.arange(0, 1), cache_modifier=".cg")
            if PROLOGUE == 1:
                total = total * tl.rsqrt(sqs / K + eps)
            total = total * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
            store_row(total, out_ptr, bias_ptr, residual_ptr, row, n, n_mask, stride_o, stride_r, HAS_BIAS, HAS_RESIDUAL)
            tl.atomic_xchg(count_ptr + tile_row, 0)


def byte_split(x, weight, fusion, block_n=32, block_k=256, chunk=256, warps=8, per_sm=4, max_split=16):
    import torch
    rows, k = x.shape[0], fusion.in_features(x)
    w = weight.weight
    n = w.shape[0]
    out = x.new_empty(rows, n)
    tiles = triton.cdiv(n, block_n)
    sms = num_sms(x.device)
    split = 1
    while tiles * split < per_sm * sms and split < max_split and (k // block_k) % (2 * split) == 0:
        split *= 2
    k_per_split = triton.cdiv(triton.cdiv(k, split), block_k) * block_k
    is_int8 = weight.format == 0
    _byte_split_kernel[(tiles * rows * split,)](
        x_ptr=x, w_ptr=w.view(torch.uint8) if not is_int8 else w, scale_ptr=weight.scales, out_ptr=out,
        **split_scratch(x.device), rows=rows, N=n, K=k, k_per_split=k_per_split, stride_x=x.stride(0),
        stride_w=w.stride(0), stride_o=out.stride(0), **fusion.kernel_args(x), FORMAT=int(weight.format),
        NATIVE_FP8=True, BLOCK_N=block_n, BLOCK_K=block_k, CHUNK=chunk, SPLIT=split, num_warps=warps)
    return out


byte_split.configs = [dict(block_n=b, block_k=k, chunk=c, warps=w, per_sm=p) for b, k, c, w, p in [
    (16, 512, 256, 4, 4), (16, 512, 256, 4, 2), (16, 512, 256, 4, 8), (16, 1024, 256, 4, 4), (16, 1024, 512, 4, 4),
    (16, 256, 256, 4, 4), (8, 1024, 512, 4, 4), (32, 512, 256, 4, 4), (32, 1024, 256, 8, 2), (16, 2048, 256, 4, 2)]]
