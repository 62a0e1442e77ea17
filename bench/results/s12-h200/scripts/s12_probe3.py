"""Session 12 call D: cuBLAS time of the stacked LoRA GEMMs by how many rows sit under the base weight (Qwen3-0.6B,
rank 16): the exact slots x shards x rank rows against the same padded to a multiple of 64 or 128, us a call."""
import torch, torch.nn.functional as F
dev = torch.device("cuda"); bf = torch.bfloat16
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
for M in (358, 128, 2048, 8192):
    for name, K, N, Sh in (("qkv", 1024, 4096, 3), ("o", 2048, 1024, 1), ("gate_up", 1024, 6144, 2), ("down", 3072, 1024, 1)):
        x = torch.randn(M, K, dtype=bf, device=dev)
        for S in (1, 4, 8):
            extra = S * Sh * 16
            cands = sorted({0, extra, -(-extra // 64) * 64, -(-extra // 128) * 128, -(-extra // 256) * 256})
            res = []
            for e in cands:
                w = torch.randn(N + e, K, dtype=bf, device=dev) * 0.02
                res.append(f"+{e}: {per_call(lambda: F.linear(x, w)):6.2f}")
            print(f"M {M:5d} {name:8s} slots {S}: " + "  ".join(res), flush=True)
