"""Session 10: the LoRA expand of Qwen3-0.6B's projections at qa-358's decode batch (358 tokens, one rank-16 adapter,
stacked base GEMM output), per launch in one CUDA graph (50 launches each), beside add_rms_norm on [358, 1024];
variants: warps 2/4/8. `--ncu` runs each projection's expand once more for Nsight Compute to catch."""
import sys
import numpy as np
import torch
from tokenmill.kernels.lora_mapping import LoRAMapping, tiles, max_tiles
from tokenmill.kernels.triton import lora, norm

dev = torch.device("cuda")
T, SLOTS, R = 358, 1, 16
order, ts, st, en = tiles(np.zeros(T, dtype=np.int64), SLOTS)
m = LoRAMapping(torch.zeros(T, dtype=torch.int32, device=dev), *(torch.from_numpy(a.astype(np.int32)).to(dev) for a in (order, ts, st, en)))
PROJ = {"qkv": (2048, 1024, 1024), "o": (1024,), "gate_up": (3072, 3072), "down": (1024,)}

def case(shards):
    n = sum(shards); extra = SLOTS * len(shards) * R
    out = torch.randn(T, n + extra, dtype=torch.bfloat16, device=dev)
    y, h = out[:, :n], out[:, n:].unflatten(1, (SLOTS, len(shards), R))[None]
    b = torch.randn(SLOTS, n, R, dtype=torch.bfloat16, device=dev) * 0.01
    ranks = torch.full((SLOTS, len(shards)), R, dtype=torch.int32, device=dev)
    return lambda: lora.lora_expand(y, h, b, ranks, shards, m)

def per_launch(fn, n=50):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n): fn()
    g.replay(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10): g.replay()
    e.record(); e.synchronize()
    return s.elapsed_time(e) * 1000 / (10 * n)

x = torch.randn(T, 1024, dtype=torch.bfloat16, device=dev); res = torch.randn_like(x); w = torch.randn(1024, dtype=torch.bfloat16, device=dev)
if "--ncu" in sys.argv:
    for name, shards in PROJ.items():
        case(shards)()
    norm.rms_norm(x, w, 1e-6, res)
    torch.cuda.synchronize(); sys.exit()
for cc in (True, False, True, False):
    lora.EXPAND_CUDA_CORES = cc
    print(f"cuda cores {cc}: " + ", ".join(f"{name} {per_launch(case(s)):.2f}" for name, s in PROJ.items()) + " us a launch", flush=True)
print(f"add_rms_norm [358, 1024]: {per_launch(lambda: norm.rms_norm(x, w, 1e-6, res)):.2f} us a launch")
print(f"empty-ish: torch.add [358,1024]: {per_launch(lambda: torch.add(x, res, out=x)):.2f} us a launch")
