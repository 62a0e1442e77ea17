"""Session 28 probe: FP8 128x128 block GEMM variants (Triton) against the tree's Triton kernel, cuBLAS's
block-scaled GEMM and cuBLAS per-tensor (the per-channel route's product), Qwen3-4B / 8B shapes.
Prints one JSON line per measurement; timings from CUDA graphs of REPS launches, median of 5."""

import itertools
import json
import sys

import torch
import triton
import triton.language as tl

from tokenmill.kernels.triton.fp8_gemm import fp8_block_gemm
from tokenmill.kernels.triton.fp8_quant import quantize_token_groups

REPS = 20


@triton.jit(do_not_specialize=["M"])
def _probe_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, out_ptr, M, N, K, stride_xm, stride_xsm, stride_xsk, stride_wn, stride_wsn,
    stride_om, BLOCK_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SCALAR_WS: tl.constexpr, MODE: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    first_m = (pid // width) * GROUP_M
    size_m = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_load = m % M
    n_load = n % N
    k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + m_load[:, None] * stride_xm + k[None, :]
    w_ptrs = w_ptr + n_load[None, :] * stride_wn + k[:, None]
    xs_ptrs = xs_ptr + m_load * stride_xsm
    if SCALAR_WS:
        ws_ptrs = ws_ptr + (pid_n * BLOCK_N // BLOCK_OUT) * stride_wsn
    else:
        ws_ptrs = ws_ptr + (n_load // BLOCK_OUT) * stride_wsn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if MODE == 2:  # manual software pipeline: scale block kb - 1 after issuing block kb's dot
        part = tl.dot(tl.load(x_ptrs), tl.load(w_ptrs))
        s = (tl.load(xs_ptrs) * tl.load(ws_ptrs))[:, None]
        for kb in range(1, K // BLOCK_K):
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
            nxt = tl.dot(tl.load(x_ptrs), tl.load(w_ptrs))
            acc = tl.fma(part, s, acc)
            part = nxt
            s = (tl.load(xs_ptrs + kb * stride_xsk) * tl.load(ws_ptrs + kb))[:, None]
        acc = tl.fma(part, s, acc)
    elif MODE == 3:  # two K blocks an iteration
        for kb in range(0, K // BLOCK_K, 2):
            d0 = tl.dot(tl.load(x_ptrs), tl.load(w_ptrs))
            d1 = tl.dot(tl.load(x_ptrs + BLOCK_K), tl.load(w_ptrs + BLOCK_K))
            s0 = (tl.load(xs_ptrs + kb * stride_xsk) * tl.load(ws_ptrs + kb))[:, None]
            s1 = (tl.load(xs_ptrs + (kb + 1) * stride_xsk) * tl.load(ws_ptrs + kb + 1))[:, None]
            acc = tl.fma(d1, s1, tl.fma(d0, s0, acc))
            x_ptrs += 2 * BLOCK_K
            w_ptrs += 2 * BLOCK_K
    else:
        for kb in range(0, K // BLOCK_K):
            x = tl.load(x_ptrs)
            w = tl.load(w_ptrs)
            if x.dtype == tl.uint8:
                x = x.to(tl.float8e4nv, bitcast=True)
                w = w.to(tl.float8e4nv, bitcast=True)
            if MODE == 1:
                acc = tl.dot(x, w, acc)
            else:
                xs = tl.load(xs_ptrs + kb * stride_xsk)
                ws = tl.load(ws_ptrs + kb)
                part = tl.dot(x, w)
                if SCALAR_WS:
                    acc = tl.fma(part, (xs * ws)[:, None], acc)
                else:
                    acc += part * xs[:, None] * ws[None, :]
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
    out = out_ptr + m[:, None] * stride_om + n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(m < M)[:, None] & (n < N)[None, :])


def probe_gemm(xq, xs, w, ws, cfg):
    bm, bn, warps, stages, group_m, scalar, mode, native = cfg
    m, k = xq.shape
    n = w.shape[0]
    out = torch.empty(m, n, dtype=torch.bfloat16, device=xq.device)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _probe_kernel[grid](
        xq if native else xq.view(torch.uint8), xs, w if native else w.view(torch.uint8), ws, out, m, n, k, xq.stride(0), xs.stride(0), xs.stride(1),
        w.stride(0), ws.stride(0), out.stride(0), BLOCK_OUT=128, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128,
        GROUP_M=group_m, SCALAR_WS=scalar, MODE=mode, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def graph_time(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(REPS):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / REPS)
    return sorted(times)[2]


SHAPES = {
    "4b": {"qkv": (6144, 2560), "o": (2560, 4096), "gate_up": (19456, 2560), "down": (2560, 9728)},
    "8b": {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288)},
}

CONFIGS = [  # (BLOCK_M, BLOCK_N, warps, stages, GROUP_M, scalar weight scale, mode, fp8 pointers)
    (64, 128, 4, 4, 8, True, 0, True),
    (64, 128, 4, 4, 8, True, 1, True),
    (128, 128, 8, 4, 8, True, 1, True),
    (64, 128, 4, 4, 8, True, 2, True),
    (64, 128, 4, 3, 8, True, 2, True),
    (64, 128, 4, 3, 8, True, 3, True),
    (64, 128, 4, 5, 8, True, 0, True),
    (128, 64, 4, 4, 8, True, 0, True),
    (128, 128, 8, 4, 8, True, 2, True),
    (64, 128, 4, 4, 1, True, 0, True),
    (64, 128, 4, 4, 16, True, 0, True),
]


def main():
    model = sys.argv[1]
    ms = [int(v) for v in sys.argv[2].split(",")]
    configs = CONFIGS if len(sys.argv) < 4 else [CONFIGS[int(i)] for i in sys.argv[3].split(",")]
    torch.manual_seed(0)
    dev = torch.device("cuda")
    one = torch.ones((), device=dev)
    for (name, (n, k)), m in itertools.product(SHAPES[model].items(), ms):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = (torch.randn(n, k, device=dev) * 0.5).to(torch.float8_e4m3fn)
        ws = torch.rand(n // 128, k // 128, device=dev) * 0.01 + 0.001
        ref = (x.float() @ (w.float() * ws.repeat_interleave(128, 0).repeat_interleave(128, 1)).t())
        scale = ref.abs().max().item()
        row = {"model": model, "proj": name, "m": m, "n": n, "k": k}
        q_gm, s_gm = quantize_token_groups(x, 128)  # scales [m, groups]
        q_tm, s_tm = quantize_token_groups(x, 128, tokens_major=True, rows=m + -m % 4)
        row["quant_us"] = round(graph_time(lambda: quantize_token_groups(x, 128)), 2)
        tree = lambda: fp8_block_gemm(x, w, ws, (128, 128), fp8_dot=True)
        row["tree_err"] = round((tree().float() - ref).abs().max().item() / scale, 5)
        row["tree_us"] = round(graph_time(tree), 2)
        try:
            mm = lambda: torch._scaled_mm(q_tm, w.t(), scale_a=s_tm, scale_b=ws.t(), out_dtype=torch.bfloat16)
            err = ((mm()[:m].float() - ref).abs().max().item()) / scale
            row["cublas_block_gemm_us"] = round(graph_time(mm), 2)
            row["cublas_block_err"] = round(err, 5)
        except Exception as e:  # noqa: BLE001
            row["cublas_block"] = str(e)[:80]
        xq_row = q_gm  # any fp8 rows: per-tensor product time
        row["cublas_tensor_fast_us"] = round(graph_time(lambda: torch._scaled_mm(
            xq_row, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True)), 2)
        for cfg in configs:
            for layout, (q, s) in (("gm", (q_gm, s_gm)),):
                key = "v_" + "_".join(str(int(c)) for c in cfg) + "_" + layout
                try:
                    out = probe_gemm(q, s, w, ws, cfg)
                    err = (out[:m].float() - ref).abs().max().item() / scale
                    row[key] = round(graph_time(lambda: probe_gemm(q, s, w, ws, cfg)), 2)
                    row[key + "_err"] = round(err, 5)
                except Exception as e:  # noqa: BLE001
                    row[key] = str(e)[:80]
        print(json.dumps(row), flush=True)


main()
