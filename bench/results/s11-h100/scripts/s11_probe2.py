"""Session 11 call B: (1) SiLU-and-mul with gate|up's expand folded in, tile widths and warps; (2) an experiment: the
residual RMSNorm with o's expand folded in as 16-token tiles in slot order on the tensor cores (whole rows per
program), against expand + add_rms_norm; 358 tokens, rank 16, Qwen3-0.6B widths, 1 and 8 adapters."""
import numpy as np, torch, triton, triton.language as tl
from tokenmill.kernels.lora_mapping import LoRAMapping, LoRAExpand, tiles
from tokenmill.kernels.triton import lora, norm, activation
from tokenmill.kernels.triton.lora import tile_delta, expand_operands

@triton.jit
def _tile_norm(x_ptr, residual_ptr, weight_ptr, out_ptr, stride_x, stride_r, stride_o, n_cols, eps, num_tokens,
               h, b, ranks, token_slots, sorted_tokens, splits, sh_split, sh, sh_slot, sh_shard, sb_slot, sb_row,
               BLOCK_M: tl.constexpr, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = offs < num_tokens
    tokens = tl.load(sorted_tokens + offs, mask=valid, other=0).to(tl.int64)
    slots = tl.load(token_slots + tokens, mask=valid, other=-1)
    cols = tl.arange(0, BLOCK); cmask = cols < n_cols
    mask = valid[:, None] & cmask[None, :]
    x = tl.load(x_ptr + tokens[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    res = tl.load(residual_ptr + tokens[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
    xf = x.to(tl.float32)
    first = tl.maximum(tl.min(tl.where(valid, slots, 2**30)), 0)
    for slot in range(first, tl.max(slots) + 1):
        xf += tile_delta(h, b, ranks, tokens, valid & (slots == slot), slot, 0, 0, cols, cmask, 1, splits,
                         sh_split, sh, sh_slot, sh_shard, sb_slot, sb_row, BLOCK_R, BLOCK_S, PRECISION)
    s = xf.to(x.dtype) + res
    tl.store(residual_ptr + tokens[:, None] * stride_r + cols[None, :], s, mask=mask)
    hf = s.to(tl.float32)
    hf = hf * tl.rsqrt(tl.sum(hf * hf, 1) / n_cols + eps)[:, None]
    w = tl.load(weight_ptr + cols, mask=cmask, other=0.0)
    tl.store(out_ptr + tokens[:, None] * stride_o + cols[None, :], w[None, :] * hf.to(x.dtype), mask=mask)

def tile_norm(x, w, eps, residual, ex, warps):
    out = torch.empty_like(x); T, n = x.shape
    args, blocks = expand_operands(ex)
    _tile_norm[(triton.cdiv(T, 16),)](x, residual, w, out, x.stride(0), residual.stride(0), out.stride(0), n, eps, T, *args,
        BLOCK_M=16, BLOCK=triton.next_power_of_2(n), PRECISION="tf32", num_warps=warps, **blocks)
    return out, residual

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
for slots in (1, 8):
    tok = np.zeros(T, np.int64) if slots == 1 else rng.integers(0, 8, T)
    m = mapping(tok, slots)
    y, ex = pending((3072, 3072), slots, m)
    ycopy = y.clone()
    t_tree = per_launch(lambda: (lora.lora_expand(ycopy, ex.h, ex.b, ex.ranks, ex.out_shards, m), activation.silu_and_mul(ycopy)))
    res = []
    for bn in (64, 128, 256):
        for w in (4, 8):
            activation._LORA_WARPS, activation._LORA_BLOCK_N = w, bn
            res.append(f"{bn}x{w}w {per_launch(lambda: activation.silu_and_mul(y, ex)):.2f}")
    activation._LORA_WARPS, activation._LORA_BLOCK_N = 8, 128
    print(f"gate_up slots {slots}: expand+silu {t_tree:.2f}; fused (cols x warps): {', '.join(res)} us", flush=True)
    yq, exq = pending((2048, 1024, 1024), slots, m)
    print(f"qkv expand slots {slots}: {per_launch(lambda: lora.lora_expand(yq, exq.h, exq.b, exq.ranks, exq.out_shards, m)):.2f} us", flush=True)
    for hidden in (1024, 2048):
        yo, exo = pending((hidden,), slots, m)
        res0 = torch.randn(T, hidden, dtype=torch.bfloat16, device=dev); w_ = torch.randn(hidden, dtype=torch.bfloat16, device=dev)
        z = yo.clone(); lora.lora_expand(z, exo.h, exo.b, exo.ranks, exo.out_shards, m); r1 = res0.clone(); want, _ = norm.rms_norm(z, w_, 1e-6, r1)
        r2 = res0.clone(); got, _ = tile_norm(yo, w_, 1e-6, r2, exo, 8)
        err = max((got.float() - want.float()).abs().max().item(), (r1.float() - r2.float()).abs().max().item())
        yc, rc = yo.clone(), res0.clone()
        t_tree = per_launch(lambda: (lora.lora_expand(yc, exo.h, exo.b, exo.ranks, exo.out_shards, m), norm.rms_norm(yc, w_, 1e-6, rc)))
        res = [f"{w} warps {per_launch(lambda: tile_norm(yo, w_, 1e-6, rc, exo, w)):.2f}" for w in (4, 8, 16)]
        print(f"o {hidden} slots {slots}: expand+norm {t_tree:.2f}; tiled fused: {', '.join(res)} us; max diff {err:.4f}", flush=True)
