"""Qwen3-4B/8B projections at M rows: bf16 cuBLAS vs torch._scaled_mm rowwise (fast accum off/on), the
activation quantization kernel, per-tensor scaled_mm. Each op 20x in one CUDA graph, median of 5."""
import json, sys, torch
from tokenmill.kernels.triton import fp8_gemm

dev = torch.device("cuda")
SHAPES = {"qwen3-4b": {"qkv": (2560, 6144), "o": (4096, 2560), "gate_up": (2560, 19456), "down": (9728, 2560)},
          "qwen3-8b": {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 24576), "down": (12288, 4096)}}

def graph_time(fn, reps=20):
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    ts = []
    for _ in range(7):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record(); g.replay(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1000 / reps)
    ts.sort()
    return ts[len(ts) // 2]

out = {}
for preset in ("qwen3-4b", "qwen3-8b"):
    for m in (358, 256, 128, 64):
        tot = {}
        for name, (k, n) in SHAPES[preset].items():
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
            ws = (w.abs().amax(1).float() / 448).clamp(min=1e-12)
            wq = (w.float() / ws[:, None]).to(torch.float8_e4m3fn)
            xq, xs = fp8_gemm.quantize_token_groups(x, k)
            ref = torch._scaled_mm(xq, wq.T, scale_a=xs, scale_b=ws[None, :], out_dtype=torch.bfloat16).float()
            fast = torch._scaled_mm(xq, wq.T, scale_a=xs, scale_b=ws[None, :], out_dtype=torch.bfloat16, use_fast_accum=True).float()
            err = ((fast - ref).abs().max() / ref.abs().max()).item()
            one = torch.ones((), device=dev)
            r = {
                "bf16": graph_time(lambda: x @ w.T),
                "rowwise": graph_time(lambda: torch._scaled_mm(xq, wq.T, scale_a=xs, scale_b=ws[None, :], out_dtype=torch.bfloat16)),
                "rowwise_fast": graph_time(lambda: torch._scaled_mm(xq, wq.T, scale_a=xs, scale_b=ws[None, :], out_dtype=torch.bfloat16, use_fast_accum=True)),
                "tensor_fast": graph_time(lambda: torch._scaled_mm(xq, wq.T, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True)),
                "tensor": graph_time(lambda: torch._scaled_mm(xq, wq.T, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)),
                "quant": graph_time(lambda: fp8_gemm.quantize_token_groups(x, k)),
                "fast_vs_slow_maxrel": err,
            }
            for key, v in r.items():
                if key != "fast_vs_slow_maxrel":
                    tot[key] = tot.get(key, 0) + v
            out[f"{preset}/{m}/{name}"] = r
            print(preset, m, name, {k2: round(v, 3) if k2 != "fast_vs_slow_maxrel" else f"{v:.1e}" for k2, v in r.items()}, flush=True)
        print(preset, m, "layer", {k2: round(v, 2) for k2, v in tot.items()}, flush=True)
        out[f"{preset}/{m}/layer"] = tot
json.dump(out, open(sys.argv[1], "w"), indent=1)
