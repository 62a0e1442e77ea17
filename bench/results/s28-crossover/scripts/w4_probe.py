"""A W4A16 GEMM probe for AWQ/GPTQ K-packed words at medium batches: each K step loads every word row
BLOCK_K/8 times over (one row of pointers per input row, the shift picked by the row), so the unpacked
tile [BLOCK_K, BLOCK_N] needs no interleave or reshape, then (q - zero) in bf16 (exact), a tensor-core dot
with the activations, the group's scales applied to the fp32 product (one group a K step). Against the
tree's weight_only_gemm (its own tiles) and the dense route, Qwen3-8B layer (4 projections), AWQ at load.
Prints one JSON line per token count: [us a layer, largest error against the reference apply]."""
import json
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, "bench")
from quant_gemm import build, max_relative_error, projections, time_call  # noqa: E402

from tokenmill.kernels.triton.packed_int import zero_points  # noqa: E402
from tokenmill.kernels.triton.weight_only_gemm import weight_only_gemm  # noqa: E402
from tokenmill.quantization.awq import AwqMethod  # noqa: E402
from tokenmill.quantization.triton_gemms import dequantized_dense, packed_weight, use_triton_gemms  # noqa: E402


@triton.jit(do_not_specialize=["M"])
def _w4_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, stride_xm, stride_wk, stride_sg, stride_zg, stride_om,
               ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, MAGIC: tl.constexpr):
    pid = tl.program_id(0)
    width = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // width) * GROUP_M
    rows_of_group = tl.minimum(tl.cdiv(M, BLOCK_M) - first_m, GROUP_M)
    tile_m = first_m + (pid % width) % rows_of_group
    tile_n = (pid % width) // rows_of_group
    m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + (m % M)[:, None] * stride_xm + k[None, :]
    w_ptrs = w_ptr + (k // 8)[:, None] * stride_wk + (n % N)[None, :]
    shifts = ((k % 8) * 4)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptrs)
        q = (tl.load(w_ptrs) >> shifts) & 15
        group = tl.zeros([1], tl.int32) + k0 // GROUP
        zeros = zero_points(z_ptr, group, n % N, (n < N + BLOCK_N)[None, :], stride_zg, 4, ZERO_OFFSET)
        scales = tl.load(s_ptr + (k0 // GROUP) * stride_sg + (n % N)).to(tl.float32)
        if MAGIC:
            w = (q | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True) - (128.0 + zeros).to(tl.bfloat16)
        else:
            w = (q.to(tl.float32) - zeros).to(x.dtype)
        acc = tl.fma(tl.dot(x, w), scales[None, :], acc)
        x_ptrs += BLOCK_K
        w_ptrs += (BLOCK_K // 8) * stride_wk
    tl.store(out_ptr + m[:, None] * stride_om + n[None, :], acc.to(tl.bfloat16), mask=(m < M)[:, None] & (n < N)[None, :])


def w4(x, pw, cfg):
    bm, bn, bk, warps, stages, magic = cfg
    m, k = x.shape
    n = pw.out_features
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    w_ptr, s_ptr, z_ptr, _ = pw.pointers()
    stride_wk, _, stride_sg, stride_zg = pw.strides()
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _w4_kernel[grid](x, w_ptr, s_ptr, z_ptr, out, m, n, k, x.stride(0), stride_wk, stride_sg, stride_zg, out.stride(0),
                     ZERO_OFFSET=pw.zero_offset, GROUP=pw.group_size, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8,
                     MAGIC=magic, num_warps=warps, num_stages=stages)
    return out


CONFIGS = [(64, 128, 128, 4, 3, 1), (64, 128, 128, 4, 3, 0), (128, 128, 128, 8, 3, 1), (64, 64, 128, 4, 4, 1),
           (128, 128, 64, 8, 3, 1), (32, 128, 128, 4, 4, 1), (128, 256, 64, 8, 3, 1), (16, 128, 128, 4, 4, 1)]
device = torch.device("cuda")
torch.manual_seed(0)
layers = []
for inp, shards in projections("qwen3-8b").values():
    layer = build(AwqMethod(128, checkpoint_is_awq=False), inp, shards, device)
    use_triton_gemms(layer)
    layers.append((layer, inp, packed_weight(layer)))
for tokens in (16, 32, 64, 96, 128, 358, 1024):
    xs = [torch.randn(tokens, inp, dtype=torch.bfloat16, device=device) for _, inp, _ in layers]
    refs = [l.method.apply(l, x, None).float() for (l, _, _), x in zip(layers, xs)]
    row = {"tokens": tokens}
    row["dense"] = round(sum(time_call(lambda l=l, x=x: dequantized_dense(l, x), repeat=20) for (l, _, _), x in zip(layers, xs)), 1)
    row["tree"] = round(sum(time_call(lambda p=p, x=x: weight_only_gemm(x, p), repeat=20) for (_, _, p), x in zip(layers, xs)), 1)
    for cfg in CONFIGS:
        key = "_".join(map(str, cfg))
        try:
            err = max(max_relative_error(w4(x, p, cfg).float(), r) for (_, _, p), x, r in zip(layers, xs, refs))
            us = sum(time_call(lambda p=p, x=x: w4(x, p, cfg), repeat=20) for (_, _, p), x in zip(layers, xs))
            row[key] = [round(us, 1), round(err, 4)]
        except Exception as e:  # noqa: BLE001
            row[key] = str(e)[:100]
    print(json.dumps(row), flush=True)
