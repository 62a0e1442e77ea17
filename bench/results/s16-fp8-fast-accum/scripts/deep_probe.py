"""fp8 GEMV in the tree, deep one-wave shape on vs off, weights cycled through HBM; Qwen3 8B/4B/0.6B shapes,
1 and 2 token rows, no fusion and the down projection's SiLU-and-mul prologue."""
import torch
from triton.testing import do_bench_cudagraph
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION, Fusion
dev = torch.device("cuda"); torch.manual_seed(0)
models = {"8b": {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288)},
          "4b": {"qkv": (6144, 2560), "o": (2560, 4096), "gate_up": (19456, 2560), "down": (2560, 9728)},
          "0.6b": {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}}
for model, shapes in models.items():
    for rows in (1, 2):
        tot = [0.0, 0.0]
        line = []
        for name, (n, k) in shapes.items():
            copies = max(2, -(-160_000_000 // (n * k)))
            w = torch.randn(n, k, device=dev) * 0.05
            scales = w.abs().amax(1) / 448
            w8s = [(w / scales[:, None]).to(torch.float8_e4m3fn) for _ in range(copies)]
            fusion = Fusion(silu_mul=True) if name == "down" else NO_FUSION
            x = torch.randn(rows, 2 * k if name == "down" else k, device=dev, dtype=torch.bfloat16)
            a = fp8_gemv.gemv(x, w8s[0], scales, fusion, deep=False)
            b = fp8_gemv.gemv(x, w8s[0], scales, fusion, deep=True)
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
            us = []
            for deep in (False, True):
                def run():
                    for w8 in w8s:
                        fp8_gemv.gemv(x, w8, scales, fusion, deep=deep)
                us.append(do_bench_cudagraph(run, rep=100) * 1000 / copies)
            tot[0] += us[0]; tot[1] += us[1]
            line.append(f"{name} {us[0]:.2f}->{us[1]:.2f}")
        print(f"{model} rows {rows}: " + "  ".join(line) + f"  | layer {tot[0]:.1f} -> {tot[1]:.1f} us", flush=True)
