"""Session 11 calls F/G: SiLU-and-mul with gate|up's expand folded in (after the review: a while loop over the slots
a tile holds, absent slots skipped; rank 64 falls back to the expand), against expand + SiLU-and-mul; 358 tokens."""
import numpy as np, torch
from tokenmill.kernels.lora_mapping import LoRAMapping, LoRAExpand, tiles
from tokenmill.kernels.triton import lora, activation
dev = torch.device("cuda"); T = 358
def mapping(slots_np, n):
    return LoRAMapping(*(torch.from_numpy(a.astype(np.int32)).to(dev) for a in (slots_np, *tiles(slots_np.astype(np.int32), n))))
def per_launch(fn, n=50):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n): fn()
    g.replay(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 1e9
    for _ in range(3):
        s.record()
        for _ in range(10): g.replay()
        e.record(); e.synchronize(); best = min(best, s.elapsed_time(e) * 1000 / (10 * n))
    return best
rng = np.random.default_rng(0)
for R in (16, 64):
    for slots in (1, 8):
        tok = np.zeros(T, np.int64) if slots == 1 else rng.integers(0, 8, T)
        m = mapping(tok, slots)
        out = torch.randn(T, 6144 + slots * 2 * R, dtype=torch.bfloat16, device=dev)
        y, h = out[:, :6144], out[:, 6144:].unflatten(1, (slots, 2, R))[None]
        b = torch.randn(slots, 6144, R, dtype=torch.bfloat16, device=dev) * 0.05
        ex = LoRAExpand(h, b, torch.full((slots, 2), R, dtype=torch.int32, device=dev), (3072, 3072), m)
        z = y.clone(); lora.lora_expand(z, h, b, ex.ranks, ex.out_shards, m); want = activation.silu_and_mul(z)
        err = (activation.silu_and_mul(y.clone(), ex).float() - want.float()).abs().max().item()
        yc = y.clone()
        t_tree = per_launch(lambda: (lora.lora_expand(yc, h, b, ex.ranks, ex.out_shards, m), activation.silu_and_mul(yc)))
        t_new = per_launch(lambda: activation.silu_and_mul(yc, ex))
        print(f"rank {R} slots {slots}: expand+silu {t_tree:.2f}, fused {t_new:.2f} us; max diff {err:.4f}", flush=True)
