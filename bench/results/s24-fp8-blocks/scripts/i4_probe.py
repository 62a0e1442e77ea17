"""Probe (s24 E): the 4-bit (AWQ repacked to GPTQ K-packed) GEMV through tl.dot with Triton's pipelined
loads (num_stages), against the shipped int4_gemv (fused and plain). Weights dequantized in registers to
f16 ((q - z) * s), activations f16 [16 cols, one real]. ORIENT 0: acc[BO, 16] = W^T-tile @ x (wgmma
candidate), 1: acc[16, BO] = x @ W-tile (M = 16: mma.sync). MAGIC 1: nibble -> f16 by OR 0x6400.
SPLIT > 1 stores fp32 partials unreduced (a bound). Qwen3-8B projections, weights > 8x L2."""
import json, math, sys
sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from f8mma_probe import timed
from layout_probe import fusion_for
from tokenmill.kernels.triton import int4_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.quantization.triton_gemms import packed_weight


@triton.jit
def _i4_kernel(qw_ptr, qz_ptr, s_ptr, x_ptr, out_ptr, N, K, k_per_split, stride_qw, stride_z, stride_s,
               BO: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr,
               SPLIT: tl.constexpr, G: tl.constexpr, ORIENT: tl.constexpr, MAGIC: tl.constexpr):
    pid = tl.program_id(0)
    tile, split = pid // SPLIT, pid % SPLIT
    cols = tile * BO + tl.arange(0, BO)
    t = tl.arange(0, BT)
    k0 = split * k_per_split
    if ORIENT == 0:
        acc = tl.zeros([BO, BT], tl.float32)
    else:
        acc = tl.zeros([BT, BO], tl.float32)
    shifts = tl.arange(0, 8) * 4
    zshift = (cols % 8) * 4
    for kk in tl.range(0, k_per_split, BK, num_stages=STAGES):
        kb = k0 + kk
        wr = kb // 8 + tl.arange(0, BK // 8)
        words = tl.load(qw_ptr + wr[:, None] * stride_qw + cols[None, :])
        g = kb // G
        z = (tl.load(qz_ptr + g * stride_z + cols // 8) >> zshift) & 0xF
        s = tl.load(s_ptr + g * stride_s + cols)
        q = (words[:, None, :] >> shifts[None, :, None]) & 0xF
        q = tl.reshape(q, [BK, BO])
        if MAGIC:
            qf = (q | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)
            zf = (z | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)
            w = (qf - zf[None, :]) * s[None, :]
        else:
            w = (q - z[None, :]).to(tl.float16) * s[None, :]
        ks = kb + tl.arange(0, BK)
        if ORIENT == 0:
            x = tl.load(x_ptr + t[None, :] * K + ks[:, None], mask=t[None, :] < 1, other=0.0)
            acc = tl.dot(tl.trans(w), x, acc)
        else:
            x = tl.load(x_ptr + t[:, None] * K + ks[None, :], mask=t[:, None] < 1, other=0.0)
            acc = tl.dot(x, w, acc)
    if ORIENT == 0:
        y = tl.sum(tl.where(t[None, :] == 0, acc, 0.0), 1)
    else:
        y = tl.sum(tl.where(t[:, None] == 0, acc, 0.0), 0)
    if SPLIT == 1:
        tl.store(out_ptr + cols, y.to(tl.bfloat16))
    else:
        tl.store(out_ptr + split * N + cols, y)


def i4(x16, p, out, bo, bk, stages, split, orient, magic, warps=4):
    n, k = p.out_features, p.in_features
    _i4_kernel[(n // bo * split,)](p.weight, p.zeros, p.scales, x16, out, n, k, k // split, p.weight.stride(0),
                                   p.zeros.stride(0), p.scales.stride(0), BO=bo, BK=bk, BT=16, STAGES=stages,
                                   SPLIT=split, G=p.group_size, ORIENT=orient, MAGIC=magic, num_warps=warps)
    return out


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        n = sum(shards)
        first = build(FORMATS["awq"](), inp, shards, dev)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["awq"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        packed = [packed_weight(la) for la in layers]
        assert packed[0].zero_offset == 0 and packed[0].group_size == 128, (packed[0].zero_offset, packed[0].group_size)
        x, fusion = fusion_for(name, inp, n, dev)
        xn = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
        x16 = torch.zeros(16, inp, dtype=torch.float16, device=dev)
        x16[0] = xn[0].to(torch.float16)
        ref = int4_gemv.gemv(xn, packed[0], NO_FUSION).float()[0]
        v = {"shipped fused": timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed]),
             "shipped plain": timed([lambda p=p: int4_gemv.gemv(xn, p, NO_FUSION) for p in packed])}
        for orient in (0, 1):
            for bo in (64, 128):
                for stages in (3, 4):
                    for split in (1, 2, 4, 8):
                        tiles = n // bo
                        if split > 1 and (tiles >= 2 * sms or tiles * split > 8 * sms):
                            continue
                        if split == 1 and tiles < sms:
                            continue
                        if inp % (split * 128):
                            continue
                        for magic in ((0, 1) if (bo, stages) == (64, 3) else (1,)):
                            key = f"o{orient} bo{bo} st{stages} sp{split} m{magic}"
                            out = torch.zeros(split * n if split > 1 else n, dtype=torch.float32 if split > 1 else torch.bfloat16, device=dev)
                            try:
                                i4(x16, packed[0], out, bo, 128, stages, split, orient, magic)
                                got = out.float().reshape(split, n).sum(0) if split > 1 else out.float()
                                err = ((got - ref).abs().max() / ref.abs().max()).item()
                                us = timed([lambda p=p, out=out: i4(x16, p, out, bo, 128, stages, split, orient, magic) for p in packed])
                            except Exception as e:
                                print(name, key, "failed", repr(e)[:300], flush=True)
                                continue
                            v[key] = us
                            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "err": round(err, 5)}), flush=True)
        v["shipped fused again"] = timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed])
        for key in ("shipped fused", "shipped plain", "shipped fused again"):
            print(json.dumps({"proj": name, "variant": key, "us": round(v[key], 2), "TBps": round(size / v[key] / 1e6, 2)}), flush=True)
        for key, us in v.items():
            totals.setdefault(key, {})[name] = us
        del layers, packed
        torch.cuda.empty_cache()
    best = {}
    for key, per in totals.items():
        if key.startswith("shipped"):
            continue
        for proj, us in per.items():
            if proj not in best or us < best[proj][1]:
                best[proj] = (key, round(us, 2))
    print("BEST", json.dumps(best), f"sum {sum(b[1] for b in best.values()):.2f}", flush=True)
    for key in ("shipped fused", "shipped plain", "shipped fused again"):
        print(key, json.dumps({p: round(u, 2) for p, u in totals[key].items()}), f"sum {sum(totals[key].values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
