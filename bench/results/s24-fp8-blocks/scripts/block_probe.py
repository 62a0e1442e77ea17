"""Probe (s24 F): FP8 block-scaled (128x128) decode at one token, Qwen3-8B projections: the tree's route
(quantize_token_groups + fp8_block_gemm + split reduce) against a swap-AB tl.dot kernel (acc[BO, 16] =
W-tile @ x^T, each K step scaled by its weight block's and activation group's scales), the same
quantization launch before it and, split, the same torch reduce after it. Weights > 8x L2."""
import json, math, sys
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from f8mma_probe import timed
from tokenmill.kernels.triton.fp8_gemm import fp8_block_gemm
from tokenmill.kernels.triton.fp8_quant import quantize_token_groups


@triton.jit
def _blk_kernel(w_ptr, wsi_ptr, x_ptr, xs_ptr, out_ptr, M, N, K, k_per_split, stride_w, stride_wsi, stride_x,
                stride_xs, BO: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr,
                SPLIT: tl.constexpr, BLOCK_OUT: tl.constexpr):
    pid = tl.program_id(0)
    tile, split = pid // SPLIT, pid % SPLIT
    rows = tile * BO + tl.arange(0, BO)
    t = tl.arange(0, BT)
    live = t < M
    acc = tl.zeros([BO, BT], tl.float32)
    k_start = split * k_per_split
    for kk in tl.range(0, k_per_split, BK, num_stages=STAGES):
        k0 = k_start + kk
        k = k0 + tl.arange(0, BK)
        w = tl.load(w_ptr + rows[:, None] * stride_w + k[None, :])
        x = tl.load(x_ptr + t[None, :] * stride_x + k[:, None], mask=live[None, :], other=0.0)
        part = tl.dot(w, x)
        kb = k0 // BK
        ws = tl.load(wsi_ptr + (rows // BLOCK_OUT) * stride_wsi + kb)
        xs = tl.load(xs_ptr + t * stride_xs + kb, mask=live, other=0.0)
        acc += part * ws[:, None] * xs[None, :]
    if SPLIT == 1:
        tl.store(out_ptr + t[None, :] * N + rows[:, None], acc.to(tl.bfloat16), mask=live[None, :])
    else:
        tl.store(out_ptr + (split * M + t[None, :]) * N + rows[:, None], acc, mask=live[None, :])


def blk(x, w, wsi, bo, stages, split, reduce=True):
    m, k = x.shape
    n = w.shape[0]
    xq, xs = quantize_token_groups(x, 128)
    out = torch.empty((split, m, n) if split > 1 else (m, n), dtype=torch.float32 if split > 1 else torch.bfloat16, device=x.device)
    _blk_kernel[(n // bo * split,)](w, wsi, xq, xs, out, m, n, k, k // split, w.stride(0), wsi.stride(0), xq.stride(0),
                                    xs.stride(0), BO=bo, BK=128, BT=16, STAGES=stages, SPLIT=split, BLOCK_OUT=128,
                                    num_warps=4)
    if split > 1 and reduce:
        return out.sum(0).to(torch.bfloat16)
    return out


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        n = sum(shards)
        first = build(FORMATS["fp8-block"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-block"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale_inv) for la in layers]
        for m in (1, 8):
            x = torch.randn(m, inp, dtype=torch.bfloat16, device=dev)
            ref = fp8_block_gemm(x, ws[0][0], ws[0][1], (128, 128)).float()
            v = {"tree": timed([lambda w=w, s=s: fp8_block_gemm(x, w, s, (128, 128)) for w, s in ws])}
            for bo in (64, 128):
                for stages in (3, 4):
                    for split in (1, 2, 4, 8):
                        tiles = n // bo
                        if split > 1 and (tiles >= 2 * sms or tiles * split > 8 * sms):
                            continue
                        if inp % (split * 128):
                            continue
                        key = f"swap bo{bo} st{stages} sp{split}"
                        try:
                            got = blk(x, ws[0][0], ws[0][1], bo, stages, split).float()
                            err = ((got - ref).abs().max() / ref.abs().max()).item()
                            v[key] = timed([lambda w=w, s=s: blk(x, w, s, bo, stages, split) for w, s in ws])
                            if split > 1:
                                v[key + " noreduce"] = timed([lambda w=w, s=s: blk(x, w, s, bo, stages, split, False) for w, s in ws])
                        except Exception as e:
                            print(name, key, "failed", repr(e)[:300], flush=True)
                            continue
                        print(json.dumps({"proj": name, "rows": m, "variant": key, "us": round(v[key], 2), "err": round(err, 5)}), flush=True)
            v["tree again"] = timed([lambda w=w, s=s: fp8_block_gemm(x, w, s, (128, 128)) for w, s in ws])
            for key, us in v.items():
                totals.setdefault((m, key), {})[name] = us
            print(json.dumps({"proj": name, "rows": m, "tree": round(v["tree"], 2), "tree again": round(v["tree again"], 2)}), flush=True)
        del layers, ws
        torch.cuda.empty_cache()
    for m in (1, 8):
        best = {}
        for (mm, key), per in totals.items():
            if mm != m or key.startswith("tree") or "noreduce" in key:
                continue
            for proj, us in per.items():
                if proj not in best or us < best[proj][1]:
                    best[proj] = (key, round(us, 2))
        tree = totals[(m, "tree")]
        print(f"rows {m} BEST swap", json.dumps(best), f"sum {sum(b[1] for b in best.values()):.2f}",
              "| tree", json.dumps({p: round(u, 2) for p, u in tree.items()}), f"sum {sum(tree.values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
