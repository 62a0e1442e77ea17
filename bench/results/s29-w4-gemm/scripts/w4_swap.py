"""W4A16 GEMM probe at medium batches (17-512 tokens), AWQ/GPTQ K-packed words, groups of 128.

Variants (all dequantize in registers, one group per K step of BLOCK_K <= GROUP):
- swap: acc [BN, BM] = W [BN, BK] (registers: the tensor cores' A operand) @ x^T [BK, BM]; words loaded
  [BN, BK/8] and repeated in place along K (`repeat_each`), so no transpose.
- FOLD=1: the weight dequantized to (q - z) * s in fp32 then rounded to x's dtype (the dense route's
  values), `acc = tl.dot(w, xt, acc)`: the dot's result feeds only the next dot, so on Hopper the wgmma
  can stay in flight. FOLD=0: 128 + q exact, the zero and scale applied to each step's product (the
  tree's way: the product is read by other ops, which makes Triton wait for each wgmma).
- plain: acc [BM, BN] = x @ W [BK, BN] (the tree's orientation), FOLD as above.
Against the dense route (dequantize + cuBLAS), the bf16 GEMM alone and the tree's weight_only_gemm.
Qwen3-8B layer (4 projections). Prints one JSON line per token count: [us a layer, largest error]."""
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, "bench")
from quant_gemm import build, max_relative_error, projections, time_call  # noqa: E402

from tokenmill.kernels.triton import split_k as split  # noqa: E402
from tokenmill.kernels.triton.packed_int import OFFSET, offset_float, repeat_each  # noqa: E402
from tokenmill.kernels.triton.weight_only_gemm import dequantize, weight_only_gemm  # noqa: E402
from tokenmill.quantization.awq import AwqMethod  # noqa: E402
from tokenmill.quantization.triton_gemms import dequantized_dense, packed_weight, use_triton_gemms  # noqa: E402


@triton.jit(do_not_specialize=["M"])
def _w4_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, k_per_split, stride_xm, stride_wk, stride_sg,
               stride_zg, stride_os, stride_om, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP: tl.constexpr,
               FOLD: tl.constexpr):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_start = tl.program_id(2) * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    m_safe = tl.minimum(m, M - 1)
    k = tl.arange(0, BLOCK_K)
    rows = k_start // 8 + tl.arange(0, BLOCK_K // 8)
    if SWAP:
        x_ptrs = x_ptr + m_safe[None, :] * stride_xm + (k_start + k)[:, None]  # [BK, BM]
        w_ptrs = w_ptr + rows[None, :] * stride_wk + n[:, None]  # [BN, BK/8]
        shifts = ((k % 8) * 4)[None, :]
        acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    else:
        x_ptrs = x_ptr + m_safe[:, None] * stride_xm + (k_start + k)[None, :]  # [BM, BK]
        w_ptrs = w_ptr + rows[:, None] * stride_wk + n[None, :]  # [BK/8, BN]
        shifts = ((k % 8) * 4)[:, None]
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        x = tl.load(x_ptrs)
        words = tl.load(w_ptrs)
        if SWAP:
            q = (repeat_each(words, 8) >> shifts) & 15
        else:
            q = (tl.trans(repeat_each(tl.trans(words), 8)) >> shifts) & 15
        group = k0 // GROUP
        zero_words = tl.load(z_ptr + group * stride_zg + n // 8)
        zeros = ((zero_words >> ((n % 8) * 4)) & 15).to(tl.float32) + (OFFSET + ZERO_OFFSET)
        scales = tl.load(s_ptr + group * stride_sg + n).to(tl.float32)
        if SWAP:
            zeros, scales = zeros[:, None], scales[:, None]
        else:
            zeros, scales = zeros[None, :], scales[None, :]
        if FOLD == 2:  # 16-bit math: (128 + q) - (128 + z) exact, times the scale rounded to x's dtype
            w = (q | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True).to(x.dtype)
            w = (w - (zeros - OFFSET + 128.0).to(x.dtype)) * scales.to(x.dtype)
            if SWAP:
                acc = tl.dot(w, x, acc)
            else:
                acc = tl.dot(x, w, acc)
        elif FOLD:
            w = ((offset_float(q) - zeros) * scales).to(x.dtype)
            if SWAP:
                acc = tl.dot(w, x, acc)
            else:
                acc = tl.dot(x, w, acc)
        else:
            w = (q | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True).to(x.dtype)
            if SWAP:
                sums = tl.sum(x.to(tl.float32), axis=0)[None, :]
                part = tl.dot(w, x) - (zeros - OFFSET + 128.0) * sums
            else:
                sums = tl.sum(x.to(tl.float32), axis=1)[:, None]
                part = tl.dot(x, w) - (zeros - OFFSET + 128.0) * sums
            acc += part * scales
        x_ptrs += BLOCK_K
        w_ptrs += (BLOCK_K // 8) * stride_wk
    out = out_ptr + tl.program_id(2) * stride_os
    if SWAP:
        tl.store(out + m[None, :] * stride_om + n[:, None], acc.to(out_ptr.dtype.element_ty),
                 mask=(m < M)[None, :] & (n < N)[:, None])
    else:
        tl.store(out + m[:, None] * stride_om + n[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(m < M)[:, None] & (n < N)[None, :])


def w4(x, pw, cfg, splits=None):
    bm, bn, bk, warps, stages, swap, fold = cfg
    m, k = x.shape
    n = pw.out_features
    grid_m, grid_n = triton.cdiv(m, bm), triton.cdiv(n, bn)
    s, per = split.plan(k, bk, grid_m * grid_n, x.device, splits)
    out = split.output(x, n, s)
    w_ptr, s_ptr, z_ptr, _ = pw.pointers()
    stride_wk, _, stride_sg, stride_zg = pw.strides()
    _w4_kernel[(grid_m, grid_n, s)](
        x, w_ptr, s_ptr, z_ptr, out, m, n, k, per, x.stride(0), stride_wk, stride_sg, stride_zg,
        out.stride(0) if s > 1 else 0, n, ZERO_OFFSET=pw.zero_offset, GROUP=pw.group_size, BLOCK_M=bm,
        BLOCK_N=bn, BLOCK_K=bk, SWAP=swap, FOLD=fold, num_warps=warps, num_stages=stages)
    return split.reduce(out, s, x.dtype)


CPU = os.environ.get("TRITON_INTERPRET") == "1"
# (BM, BN, BK, warps, stages, swap, fold)
CONFIGS_B = [
    (16, 64, 128, 4, 4, 1, 1), (16, 128, 128, 4, 4, 1, 1), (32, 64, 128, 4, 4, 1, 1), (32, 128, 128, 4, 3, 1, 1),
    (64, 64, 128, 4, 3, 1, 1), (64, 64, 128, 4, 4, 1, 1), (64, 128, 128, 8, 3, 1, 1), (128, 64, 128, 4, 3, 1, 1),
    (128, 128, 128, 8, 3, 1, 1), (128, 128, 64, 4, 4, 1, 1), (32, 64, 128, 4, 4, 0, 1), (64, 64, 128, 4, 3, 0, 1),
    (128, 128, 128, 8, 3, 0, 1), (32, 64, 128, 4, 4, 1, 2), (64, 64, 128, 4, 3, 1, 2), (128, 128, 128, 8, 3, 1, 2),
]
CONFIGS = [
    (64, 128, 128, 4, 3, 1, 1), (64, 128, 128, 4, 3, 1, 0), (64, 128, 128, 4, 3, 0, 1),
    (32, 128, 128, 4, 3, 1, 1), (64, 64, 128, 4, 3, 1, 1), (128, 128, 128, 8, 3, 1, 1),
    (128, 128, 64, 4, 4, 1, 1), (64, 128, 64, 4, 4, 1, 1), (64, 256, 64, 8, 3, 1, 1),
    (128, 256, 64, 8, 3, 1, 1), (32, 64, 128, 4, 4, 1, 1), (128, 128, 64, 8, 4, 0, 1),
]
if os.environ.get("CONFIGS") == "B":
    CONFIGS = CONFIGS_B
if CPU:
    CONFIGS = [(16, 32, 64, 4, 1, 1, 2), (16, 32, 64, 4, 1, 1, 1), (16, 32, 64, 4, 1, 1, 0), (16, 32, 64, 4, 1, 0, 1), (16, 32, 64, 4, 1, 0, 0)]
device = torch.device("cpu" if CPU else "cuda")
dtype = torch.float32 if CPU else torch.bfloat16
torch.manual_seed(0)
layers = []
shapes = {"q": (256, [128, 64, 64]), "d": (512, [256])} if CPU else projections(os.environ.get("PRESET", "qwen3-8b"))
for inp, shards in shapes.values():
    layer = build(AwqMethod(128, checkpoint_is_awq=False), inp, shards, device)
    if CPU:
        layer.float()
    else:
        use_triton_gemms(layer)
    layers.append((layer, inp, packed_weight(layer)))
if CPU:
    for tokens in (5, 20):
        for layer, inp, pw in layers:
            x = torch.randn(tokens, inp, dtype=dtype)
            ref = x @ dequantize(pw, torch.float32)
            for cfg in CONFIGS:
                for splits in (1, 2):
                    err = max_relative_error(w4(x, pw, cfg, splits).float(), ref)
                    print(tokens, inp, cfg, splits, f"{err:.2e}")
                    assert err < (1e-5 if cfg[6] == 1 else 1e-2), err
    sys.exit(0)
dense_w = [dequantize(p, dtype) for _, _, p in layers]
for tokens in [int(t) for t in os.environ.get("TOKENS", "32,64,96,128,256,512").split(",")]:
    xs = [torch.randn(tokens, inp, dtype=dtype, device=device) for _, inp, _ in layers]
    refs = [x.float() @ w.float() for x, w in zip(xs, dense_w)]
    row = {"tokens": tokens}
    row["dense"] = round(sum(time_call(lambda l=l, x=x: dequantized_dense(l, x), repeat=20) for (l, _, _), x in zip(layers, xs)), 1)
    row["bf16"] = round(sum(time_call(lambda w=w, x=x: x @ w, repeat=20) for w, x in zip(dense_w, xs)), 1)
    if tokens <= 128 and os.environ.get("TREE", "1") == "1":
        row["tree"] = round(sum(time_call(lambda p=p, x=x: weight_only_gemm(x, p), repeat=20) for (_, _, p), x in zip(layers, xs)), 1)
    for cfg in CONFIGS:
        key = "_".join(map(str, cfg))
        try:
            err = max(max_relative_error(w4(x, p, cfg).float(), r) for (_, _, p), x, r in zip(layers, xs, refs))
            per = [time_call(lambda p=p, x=x: w4(x, p, cfg), repeat=20) for (_, _, p), x in zip(layers, xs)]
            row[key] = [round(sum(per), 1), round(err, 4), [round(u, 1) for u in per]]
        except Exception as e:  # noqa: BLE001
            row[key] = str(e)[:100]
    print(json.dumps(row), flush=True)
