"""fp8_block_gemm (the Triton kernel, fp8 dots) on Qwen3-4B / 8B layer shapes: us a layer (4 GEMMs, the
activation quantization included), from CUDA graphs; argv: label. Prints one JSON line."""
import hashlib
import json
import sys

import torch

from tokenmill.kernels.triton.fp8_gemm import fp8_block_gemm

SHAPES = {
    "4b": [(6144, 2560), (2560, 4096), (19456, 2560), (2560, 9728)],
    "8b": [(6144, 4096), (4096, 4096), (24576, 4096), (4096, 12288)],
}
REPS = 20


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


torch.manual_seed(0)
row = {"label": sys.argv[1]}
digest = hashlib.sha256()
for model, shapes in SHAPES.items():
    weights = []
    for n, k in shapes:
        w = (torch.randn(n, k, device="cuda") * 0.5).to(torch.float8_e4m3fn)
        ws = torch.rand(n // 128, k // 128, device="cuda") * 0.01 + 0.001
        weights.append((w, ws))
    for tokens in (2, 8, 16, 64, 128, 358, 2048):
        xs = [torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16) for _, k in shapes]
        total = 0.0
        for x, (w, ws) in zip(xs, weights):
            out = fp8_block_gemm(x, w, ws, (128, 128), fp8_dot=True)
            digest.update(out.float().cpu().numpy().tobytes())
            total += graph_time(lambda: fp8_block_gemm(x, w, ws, (128, 128), fp8_dot=True))
        row[f"{model}_{tokens}"] = round(total, 2)
row["digest"] = digest.hexdigest()[:16]
print(json.dumps(row), flush=True)
