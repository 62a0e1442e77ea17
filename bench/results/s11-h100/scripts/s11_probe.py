"""Session 11: the LoRA expand folded into SiLU-and-mul (gate|up) and the residual RMSNorm (o, down), against
the expand launch followed by the plain kernel, per pair in one CUDA graph (50 each), 358 tokens, rank 16,
stacked base-GEMM output; one adapter (every token) and 8 (random slots); Qwen3-0.6B and Qwen3-8B widths."""
import numpy as np, torch
from tokenmill.kernels.lora_mapping import LoRAMapping, LoRAExpand, tiles
from tokenmill.kernels.triton import lora, norm, activation

dev = torch.device("cuda"); T, R = 358, 16
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
def pending(shards, slots, m):
    n = sum(shards); extra = slots * len(shards) * R
    out = torch.randn(T, n + extra, dtype=torch.bfloat16, device=dev)
    y, h = out[:, :n], out[:, n:].unflatten(1, (slots, len(shards), R))[None]
    b = torch.randn(slots, n, R, dtype=torch.bfloat16, device=dev) * 0.05
    ranks = torch.full((slots, len(shards)), R, dtype=torch.int32, device=dev)
    return y, LoRAExpand(h, b, ranks, tuple(shards), m)
rng = np.random.default_rng(0)
for hidden, inter in ((1024, 3072), (4096, 12288)):
    for slots in (1, 8):
        tok = np.zeros(T, np.int64) if slots == 1 else rng.integers(0, 8, T)
        m = mapping(tok, slots)
        y, ex = pending((inter, inter), slots, m)
        def tree_gu():
            z = y.clone(); lora.lora_expand(z, ex.h, ex.b, ex.ranks, ex.out_shards, m); return activation.silu_and_mul(z)
        err = (activation.silu_and_mul(y, ex).float() - tree_gu().float()).abs().max().item()
        ycopy = y.clone()
        t_tree = per_launch(lambda: (lora.lora_expand(ycopy, ex.h, ex.b, ex.ranks, ex.out_shards, m), activation.silu_and_mul(ycopy)))
        t_plain = per_launch(lambda: activation.silu_and_mul(ycopy))
        res = []
        for w in (4, 8):
            activation._LORA_WARPS = w; res.append(f"{w} warps {per_launch(lambda: activation.silu_and_mul(y, ex)):.2f}")
        activation._LORA_WARPS = 8
        print(f"gate_up {hidden}/{inter} slots {slots}: expand+silu {t_tree:.2f} (silu alone {t_plain:.2f}) fused: {', '.join(res)} us; max diff {err:.4f}", flush=True)
        yo, exo = pending((hidden,), slots, m)
        res0 = torch.randn(T, hidden, dtype=torch.bfloat16, device=dev); w_ = torch.randn(hidden, dtype=torch.bfloat16, device=dev)
        z = yo.clone(); lora.lora_expand(z, exo.h, exo.b, exo.ranks, exo.out_shards, m); r1 = res0.clone(); want, _ = norm.rms_norm(z, w_, 1e-6, r1)
        r2 = res0.clone(); got, _ = norm.rms_norm(yo, w_, 1e-6, r2, exo)
        err = max((got.float() - want.float()).abs().max().item(), (r1.float() - r2.float()).abs().max().item())
        yc, rc = yo.clone(), res0.clone()
        t_tree = per_launch(lambda: (lora.lora_expand(yc, exo.h, exo.b, exo.ranks, exo.out_shards, m), norm.rms_norm(yc, w_, 1e-6, rc)))
        t_plain = per_launch(lambda: norm.rms_norm(yc, w_, 1e-6, rc))
        res = []
        orig = norm._warps
        for w in (4, 8, 16):
            norm._warps = lambda n, l, w=w: w
            res.append(f"{w} warps {per_launch(lambda: norm.rms_norm(yo, w_, 1e-6, rc, exo)):.2f}")
        norm._warps = orig
        print(f"o/down {hidden} slots {slots}: expand+norm {t_tree:.2f} (norm alone {t_plain:.2f}) fused: {', '.join(res)} us; max diff {err:.4f}", flush=True)
