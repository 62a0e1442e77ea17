"""Session 12 call E: o's / down's LoRA expand in the residual RMSNorm, one program a row, B rank-major
([slots, rank, out]: each rank's row of B loaded contiguously), delta on the CUDA cores; against the tree's
expand + add_rms_norm. us a call."""
import numpy as np, torch, triton, triton.language as tl
from tokenmill.kernels.lora_mapping import LoRAMapping, tiles
from tokenmill.kernels.triton import lora, norm
dev = torch.device("cuda"); R = 16; bf = torch.bfloat16

@triton.jit
def _lora_add_rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, h_ptr, bt_ptr, token_slots, ranks,
                              stride_x, stride_r, stride_o, stride_h, stride_h_slot, stride_bt_slot, stride_bt_rank,
                              n_cols, eps, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, UNROLL: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    res = tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
    slot = tl.load(token_slots + row)
    rank = tl.load(ranks + tl.maximum(slot, 0), mask=slot >= 0, other=0)
    if rank > 0:
        delta = tl.zeros((BLOCK,), tl.float32)
        hrow = h_ptr + row * stride_h + slot * stride_h_slot
        brow = bt_ptr + slot.to(tl.int64) * stride_bt_slot + cols
        if UNROLL:
            for r in tl.static_range(BLOCK_R):
                hr = tl.load(hrow + r, mask=r < rank, other=0.0).to(bt_ptr.dtype.element_ty).to(tl.float32)
                delta += hr * tl.load(brow + r * stride_bt_rank, mask=mask & (r < rank), other=0.0).to(tl.float32)
        else:
            for r in range(rank):
                hr = tl.load(hrow + r).to(bt_ptr.dtype.element_ty).to(tl.float32)
                delta += hr * tl.load(brow + r * stride_bt_rank, mask=mask, other=0.0).to(tl.float32)
        x = (x.to(tl.float32) + delta).to(x.dtype)
    x = x + res
    tl.store(residual_ptr + row * stride_r + cols, x, mask=mask)
    h = x.to(tl.float32)
    h = h * tl.rsqrt(tl.sum(h * h, 0) / n_cols + eps)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_o + cols, weight * h.to(x.dtype), mask=mask)

def fused(y, residual, weight, h, bt, token_slots, ranks, unroll, warps):
    out = torch.empty_like(residual)
    n = residual.shape[1]
    _lora_add_rms_norm_kernel[(y.shape[0],)](y, residual, weight, out, h, bt, token_slots, ranks,
        y.stride(0), residual.stride(0), out.stride(0), h.stride(0), h.stride(1), bt.stride(0), bt.stride(1), n, 1e-6,
        BLOCK=triton.next_power_of_2(n), BLOCK_R=16, UNROLL=unroll, num_warps=warps)
    return out, residual

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
for n in (1024, 4096):
    for T in (358, 2048, 8192):
        for S in (1, 8):
            tok = np.zeros(T, np.int64) if S == 1 else rng.integers(0, S, T)
            m = mapping(tok, S)
            out = torch.randn(T, n + S * R, dtype=bf, device=dev)
            y, h = out[:, :n], out[:, n:].unflatten(1, (S, 1, R))[None]
            b = torch.randn(S, n, R, dtype=bf, device=dev) * 0.05
            bt = b.transpose(1, 2).contiguous()  # [S, R, n]
            ranks = torch.full((S, 1), R, dtype=torch.int32, device=dev)
            weight = torch.randn(n, dtype=bf, device=dev)
            res0 = torch.randn(T, n, dtype=bf, device=dev)
            res = res0.clone()
            yc = y.clone()
            def tree():
                yy = yc.copy_(y) if False else yc
                lora.lora_expand(yy, h, b, ranks, (n,), m)
                return norm.rms_norm(yy, weight, 1e-6, res)
            ya = y.clone(); ra = res0.clone(); lora.lora_expand(ya, h, b, ranks, (n,), m); want, wres = norm.rms_norm(ya, weight, 1e-6, ra)
            line = f"n {n} T {T:5d} slots {S}: expand+norm {per_call(tree):6.2f} norm {per_call(lambda: norm.rms_norm(yc, weight, 1e-6, res)):6.2f}"
            for unroll in (True, False):
                for warps in (4, 8):
                    rb = res0.clone(); got, gres = fused(y, rb, weight, h[0], bt, m.token_slots, ranks, unroll, warps)
                    err = max((got.float() - want.float()).abs().max().item(), (gres.float() - wres.float()).abs().max().item())
                    t = per_call(lambda: fused(y, res, weight, h[0], bt, m.token_slots, ranks, unroll, warps))
                    line += f" | {'unrolled' if unroll else 'loop'} {warps}w {t:6.2f} (diff {err:.3f})"
            print(line, flush=True)
