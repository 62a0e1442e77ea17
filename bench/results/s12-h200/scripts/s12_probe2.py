"""Session 12 call C: the expand and the LoRA SiLU-and-mul with several column blocks a program (col_steps),
us a call at T tokens, against the base op alone (GEMM output already there). Qwen3-0.6B widths, rank 16."""
import numpy as np, torch
from tokenmill.kernels.lora_mapping import LoRAMapping, LoRAExpand, tiles, max_tiles
from tokenmill.kernels.triton import lora, activation
dev = torch.device("cuda"); R = 16; bf = torch.bfloat16
def mapping(slots_np, n):
    return LoRAMapping(*(torch.from_numpy(a.astype(np.int32)).to(dev) for a in (slots_np, *tiles(slots_np.astype(np.int32), n))))
def per_call(fn, n=20):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n): fn()
    g.replay(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 1e9
    for _ in range(5):
        s.record()
        for _ in range(5): g.replay()
        e.record(); e.synchronize(); best = min(best, s.elapsed_time(e) * 1000 / (5 * n))
    return best
rng = np.random.default_rng(0)
STEPS = (1, 2, 4, 8, 16)
for T in (358, 2048, 8192):
    for S in (1, 8):
        tok = np.zeros(T, np.int64) if S == 1 else rng.integers(0, S, T)
        m = mapping(tok, S)
        for name, shards in (("qkv", (2048, 1024, 1024)), ("o", (1024,)), ("gate_up", (3072, 3072))):
            Sh, n = len(shards), sum(shards)
            out = torch.randn(T, n + S * Sh * R, dtype=bf, device=dev)
            y, h = out[:, :n], out[:, n:].unflatten(1, (S, Sh, R))[None]
            b = torch.randn(S, n, R, dtype=bf, device=dev) * 0.05
            ranks = torch.full((S, Sh), R, dtype=torch.int32, device=dev)
            ex = LoRAExpand(h, b, ranks, shards, m)
            if name == "gate_up":
                want = activation.silu_and_mul(y, ex, col_steps=1).float()
                base = per_call(lambda: activation.silu_and_mul(y))
                default = per_call(lambda: activation.silu_and_mul(y, ex))
                got = {c: per_call(lambda: activation.silu_and_mul(y, ex, col_steps=c)) for c in STEPS}
                err = max((activation.silu_and_mul(y, ex, col_steps=c).float() - want).abs().max().item() for c in STEPS)
            else:
                yc = y.clone()
                base = 0.0
                default = per_call(lambda: lora.lora_expand(yc, h, b, ranks, shards, m))
                got = {c: per_call(lambda: lora.lora_expand(yc, h, b, ranks, shards, m, col_steps=c)) for c in STEPS}
                y1, y2 = y.clone(), y.clone()
                lora.lora_expand(y1, h, b, ranks, shards, m, col_steps=1); lora.lora_expand(y2, h, b, ranks, shards, m, col_steps=8)
                err = (y1.float() - y2.float()).abs().max().item()
            steps = "  ".join(f"{c}: {t:7.2f}" for c, t in got.items())
            print(f"T {T:5d} slots {S} {name:8s} base {base:7.2f} default {default:7.2f} | col_steps {steps} | diff {err:.4f}", flush=True)
