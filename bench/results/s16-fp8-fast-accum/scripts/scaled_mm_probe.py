"""_scaled_mm with and without fast accumulation at Qwen3-4B's projection shapes, 358/368 tokens: time and
error against a float64 product of the same fp8 operands; bf16 torch.mm beside."""
import torch
from triton.testing import do_bench_cudagraph
dev = torch.device("cuda"); torch.manual_seed(0)
one = torch.ones((), device=dev)
for m in (358, 368, 384):
    for name, (n, k) in {"qkv": (6144, 2560), "o": (2560, 4096), "gate_up": (19456, 2560), "down": (2560, 9728)}.items():
        a = (torch.randn(m, k, device=dev) * 2).to(torch.float8_e4m3fn)
        b = (torch.randn(n, k, device=dev) * 2).to(torch.float8_e4m3fn)
        ref = a.double() @ b.double().T
        row = []
        for fast in (False, True):
            out = torch._scaled_mm(a, b.T, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast)
            err = ((out.double() - ref).abs().mean() / ref.abs().mean()).item()
            us = do_bench_cudagraph(lambda: torch._scaled_mm(a, b.T, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast), rep=100) * 1000
            row.append(f"fast={fast}: {us:6.1f} us rel err {err:.2e}")
        ab, bb = a.to(torch.bfloat16), b.to(torch.bfloat16)
        us = do_bench_cudagraph(lambda: ab @ bb.T, rep=100) * 1000
        print(f"m={m} {name:8} " + " | ".join(row) + f" | bf16 {us:6.1f} us")
