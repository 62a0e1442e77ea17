"""fp8 GEMV launch-shape sweep at Qwen3-8B's projections, one token, weights cycled so every launch reads HBM:
BLOCK_N x programs per SM for the split x BLOCK_K x warps. Prints each shape's current and best five."""
import json, os, sys, torch
from triton.testing import do_bench_cudagraph
from tokenmill.kernels.triton import fp8_gemv, gemv_fusion
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
dev = torch.device("cuda"); torch.manual_seed(0)
shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288)}
if len(sys.argv) > 1 and sys.argv[1] == "4b":
    shapes = {"qkv": (6144, 2560), "o": (2560, 4096), "gate_up": (19456, 2560), "down": (2560, 9728)}
results = {}
for name, (n, k) in shapes.items():
    copies = max(2, -(-160_000_000 // (n * k)))
    w = torch.randn(n, k, device=dev) * 0.05
    scales = w.abs().amax(1) / 448
    w8s = [(w / scales[:, None]).to(torch.float8_e4m3fn) for _ in range(copies)]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    ref = fp8_gemv.gemv(x, w8s[0], scales, NO_FUSION)
    rows = []
    for bn in (None, 8, 16, 32):
        for per_sm in (1, 2, 4, 8):
            for bk in (512, 1024):
                for nw in (2, 4, 8):
                    if bn == 32 and bk == 1024 or (bn is None and (per_sm, bk, nw) != (2, 512, 4)):
                        continue
                    gemv_fusion.SPLIT_PROGRAMS_PER_SM = per_sm
                    try:
                        out = fp8_gemv.gemv(x, w8s[0], scales, NO_FUSION, block_n=bn, block_k=bk, num_warps=nw)
                        torch.testing.assert_close(out, ref, rtol=2e-2, atol=1e-2)
                        def run():
                            for w8 in w8s:
                                fp8_gemv.gemv(x, w8, scales, NO_FUSION, block_n=bn, block_k=bk, num_warps=nw)
                        us = do_bench_cudagraph(run, rep=60) * 1000 / copies
                    except Exception as e:  # noqa
                        print(name, bn, per_sm, bk, nw, "failed", str(e)[:80]); continue
                    rows.append((us, bn, per_sm, bk, nw))
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = 2
    rows.sort()
    current = [r for r in rows if r[1] is None][0]
    results[name] = rows
    print(f"{name:8} current {current[0]:6.2f} us ({n * k / current[0] / 1e3:.0f} GB/s); best: " +
          "  ".join(f"{us:.2f} (bn {bn} ps {ps} bk {bk} w {nw})" for us, bn, ps, bk, nw in rows[:5]), flush=True)
json.dump(results, open(os.path.join(os.environ.get("OUT", "/tmp"), f"gemv-sweep-{torch.cuda.get_device_name().split()[1]}.json"), "w"))
