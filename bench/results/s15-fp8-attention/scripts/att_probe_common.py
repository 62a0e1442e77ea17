import torch
H, KVH, D, PAGE, N = 32, 8, 128, 16, 358
torch.manual_seed(0)

def batch(ctx, dtype):
    blocks = -(-ctx // PAGE)
    cache = (torch.randn(2, N * blocks + 1, PAGE, KVH, D, device="cuda") * 2).to(dtype)
    tables = torch.randperm(N * blocks, device="cuda", dtype=torch.int32).view(N, blocks)
    lens = torch.randint(ctx // 2, ctx + 1, (N,), device="cuda", dtype=torch.int32)
    q = (torch.randn(N, H, D, device="cuda") * 3).to(torch.bfloat16)
    scales = torch.tensor([0.7, 0.3], device="cuda") if dtype == torch.float8_e4m3fn else None
    return q, cache, tables, lens, scales

def reference(q, cache, tables, lens, scales):
    out = torch.empty(N, H, D, device="cuda")
    c = cache.float()
    if scales is not None:
        c = torch.stack([c[0] * scales[0], c[1] * scales[1]])
    for i in range(N):
        L = int(lens[i]); b = tables[i, : -(-L // PAGE)].long()
        k = c[0][b].flatten(0, 1)[:L]; v = c[1][b].flatten(0, 1)[:L]  # [L, KVH, D]
        k = k.repeat_interleave(H // KVH, 1); v = v.repeat_interleave(H // KVH, 1)
        s = torch.einsum("hd,lhd->hl", q[i].float(), k) * D**-0.5
        out[i] = torch.einsum("hl,lhd->hd", s.softmax(-1), v)
    return out

def graph(mod, args, tiling=None, reps=20):
    """`reps` launches of `mod`'s decode attention on `args` (a `DecodeTiling` or None) in one CUDA graph."""
    fn = lambda: mod.decode_attention(*args[:4], D**-0.5, 1, args[4], tiling=tiling)
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    return g, reps

def time_graph(g, reps):
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record(); g.replay(); e.record(); e.synchronize()
    return s.elapsed_time(e) * 1000 / reps

