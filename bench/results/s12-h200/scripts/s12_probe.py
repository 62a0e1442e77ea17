"""Session 12 call B: LoRA at prompt-size batches. Per projection of Qwen3-0.6B (q|k|v, o, gate|up + SiLU-and-mul),
us a call for T tokens: base GEMM alone; the tree's stacked GEMM + Triton expand (fused SiLU for gate|up); the base GEMM,
a shrink GEMM and a masked h times rank-major B as cuBLAS addmm per shard (then plain SiLU); the stacked GEMM + addmm."""
import numpy as np, torch, torch.nn.functional as F
from tokenmill.kernels.lora_mapping import LoRAMapping, LoRAExpand, tiles
from tokenmill.kernels.triton import lora, activation
dev = torch.device("cuda"); R = 16; bf = torch.bfloat16
def mapping(slots_np, n):
    return LoRAMapping(*(torch.from_numpy(a.astype(np.int32)).to(dev) for a in (slots_np, *tiles(slots_np.astype(np.int32), n))))
def per_call(fn, n=10):
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
PROJ = {"qkv": (1024, (2048, 1024, 1024)), "o": (2048, (1024,)), "gate_up": (1024, (3072, 3072))}
for T in (358, 1024, 2048, 8192):
    for S in (1, 8):
        tok = np.zeros(T, np.int64) if S == 1 else rng.integers(0, S, T)
        m = mapping(tok, S)
        onehot = (m.token_slots[:, None] == torch.arange(S, device=dev)).to(bf)
        for name, (K, shards) in PROJ.items():
            Sh, n = len(shards), sum(shards)
            x = torch.randn(T, K, dtype=bf, device=dev)
            stacked = torch.randn(n + S * Sh * R, K, dtype=bf, device=dev) * 0.02
            W, A = stacked[:n], stacked[n:]
            b_rm = torch.randn(n, S, R, dtype=bf, device=dev) * 0.05  # rank-major storage
            b = b_rm.permute(1, 0, 2)  # [S, n, R] view
            ranks = torch.full((S, Sh), R, dtype=torch.int32, device=dev)
            bounds = np.cumsum([0, *shards]).tolist()
            silu = name == "gate_up"
            def cur():
                out = F.linear(x, stacked); y, h = out[:, :n], out[:, n:].unflatten(1, (S, Sh, R))[None]
                ex = LoRAExpand(h, b, ranks, tuple(shards), m)
                if silu: return activation.silu_and_mul(y, ex)
                lora.lora_expand(y, h, b, ranks, tuple(shards), m); return y
            def add(y, h):
                hm = torch.empty(T, Sh, S, R, dtype=bf, device=dev)
                torch.mul(h.view(T, S, Sh, R).transpose(1, 2), onehot[:, None, :, None], out=hm)
                for i in range(Sh):
                    y[:, bounds[i]:bounds[i + 1]].addmm_(hm[:, i].reshape(T, S * R), b_rm[bounds[i]:bounds[i + 1]].view(-1, S * R).t())
                return activation.silu_and_mul(y) if silu else y
            def split():
                return add(F.linear(x, W), F.linear(x, A))
            def stack():
                out = F.linear(x, stacked); return add(out[:, :n], out[:, n:])
            def base():
                y = F.linear(x, W); return activation.silu_and_mul(y) if silu else y
            ref = cur().float()
            errs = [(f() .float() - ref).abs().max().item() for f in (split, stack)]
            t = [per_call(f) for f in (base, cur, split, stack)]
            print(f"T {T:5d} slots {S} {name:8s}: base {t[0]:7.2f}  tree {t[1]:7.2f}  split+addmm {t[2]:7.2f}  stacked+addmm {t[3]:7.2f} us; diffs {errs[0]:.3f} {errs[1]:.3f}", flush=True)
