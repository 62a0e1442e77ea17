"""Session 10: the LoRA expand at qa-358's decode batch (358 tokens, one rank-16 adapter, stacked GEMM output) per launch in
one CUDA graph, for token tiles of 16 (the tree), 32 and 64, with and without a 64-register cap."""
import numpy as np
import torch
from tokenmill.kernels import lora_mapping
from tokenmill.kernels.lora_mapping import LoRAMapping
from tokenmill.kernels.triton import lora

dev = torch.device("cuda")
T, SLOTS, R = 358, 1, 16
PROJ = {"qkv": (2048, 1024, 1024), "o": (1024,), "gate_up": (3072, 3072), "down": (1024,)}

def case(shards):
    order, ts, st, en = lora_mapping.tiles(np.zeros(T, dtype=np.int64), SLOTS)
    m = LoRAMapping(torch.zeros(T, dtype=torch.int32, device=dev), *(torch.from_numpy(a.astype(np.int32)).to(dev) for a in (order, ts, st, en)))
    n = sum(shards); extra = SLOTS * len(shards) * R
    out = torch.randn(T, n + extra, dtype=torch.bfloat16, device=dev)
    y, h = out[:, :n], out[:, n:].unflatten(1, (SLOTS, len(shards), R))[None]
    b = torch.randn(SLOTS, n, R, dtype=torch.bfloat16, device=dev) * 0.01
    ranks = torch.full((SLOTS, len(shards)), R, dtype=torch.int32, device=dev)
    ref = y.float() + torch.einsum("tr,nr->tn", h[0, :, 0].flatten(1).float().view(T, len(shards), R)[:, 0].bfloat16().float(), b[0].float()) if len(shards) == 1 else None
    return (lambda: lora.lora_expand(y, h, b, ranks, shards, m)), y, ref

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

orig = lora._expand_kernel.run
for rep in range(2):
    for tile in (16, 32, 64):
        for cap in (None, 64):
            lora_mapping.TILE_TOKENS = lora.TILE_TOKENS = tile
            def run(*a, _c=cap, **k):
                if _c: k["maxnreg"] = _c
                return orig(*a, **k)
            lora._expand_kernel.run = run
            cells = []
            for name, shards in PROJ.items():
                fn, y, ref = case(shards)
                if ref is not None:
                    y0 = y.clone(); fn(); torch.cuda.synchronize()
                    err = (y.float() - ref).abs().max().item(); y.copy_(y0)
                    assert err < 0.05, f"tile {tile} {name}: {err}"
                cells.append(f"{name} {per_launch(fn):.2f}")
            print(f"tile {tile:2d} maxnreg {cap}: " + ", ".join(cells) + " us a launch", flush=True)
lora._expand_kernel.run = orig
