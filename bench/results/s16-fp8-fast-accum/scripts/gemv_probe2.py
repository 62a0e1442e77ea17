"""Call C probe: the fp8 GEMV's launch shapes and its conversion-free variant (`gemv_probe.NOCONV`) at
Qwen3-8B's projections, one token, weights cycled so every launch reads HBM; the bf16 GEMV beside them."""
import sys, torch
from triton.testing import do_bench_cudagraph
from tokenmill.kernels.triton import fp8_gemv, skinny_gemm
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from gemv_probe import NOCONV, variant  # noqa: E402

variants = {"current": fp8_gemv, "noconv": variant("noconv", NOCONV, False)}
dev = torch.device("cuda")
shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288)}
torch.manual_seed(0)
configs = [("current", 512, 4), ("current", 1024, 4), ("current", 512, 8), ("current", 256, 4), ("noconv", 512, 4)]
print(f"{'shape':8} {'MB':>6} " + " ".join(f"{v[0][:4]}-{v[1]}-{v[2]:<8}" for v in configs) + "  bf16")
totals = [0.0] * (len(configs) + 1)
for name, (n, k) in shapes.items():
    copies = max(2, -(-160_000_000 // (n * k)))  # every launch reads from HBM, not L2
    w = (torch.randn(n, k, device=dev) * 0.05)
    scales = w.abs().amax(1) / 448
    w8s = [(w / scales[:, None]).to(torch.float8_e4m3fn) for _ in range(copies)]
    wbs = [w.to(torch.bfloat16) for _ in range(copies)]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    row = []
    for i, (vname, bk, nw) in enumerate(configs):
        mod = variants[vname]
        def run():
            for w8 in w8s:
                mod.gemv(x, w8, scales, NO_FUSION, block_k=bk, num_warps=nw)
        us = do_bench_cudagraph(run, rep=200) * 1000 / copies
        totals[i] += us
        row.append(f"{us:6.2f} {n * k / us / 1e3:5.0f}")
    def runb():
        for wb in wbs:
            skinny_gemm.linear(x, wb)
    us = do_bench_cudagraph(runb, rep=200) * 1000 / copies
    totals[-1] += us
    row.append(f"{us:6.2f} {2 * n * k / us / 1e3:5.0f}")
    print(f"{name:8} {n * k / 1e6:6.1f} " + " ".join(row))
print("layer us: " + "  ".join(f"{t:.1f}" for t in totals))
