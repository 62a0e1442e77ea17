"""Probe (s25): the 1-row 4-bit GEMV's tile shape and bytes in flight. Hypothesis: int4_gemv streams
gate|up at ~2.2 TB/s (fp8_gemv ~3.5) because each program keeps only 2 x 4 KB in flight and gate|up has
384 programs. Variants (plain input, no prologue; deterministic split K as the tree does):
 KP: GPTQ K-packed words [K/8, N] (as stored): tile [GPS groups, 16 word rows, BN cols], AHEAD steps ahead.
 NM: the same words transposed, [N, K/8] (each output's words contiguous, like fp8_gemv's rows):
     tile [BN outputs, GPS groups, 16 words].
Qwen3-8B projections, weights rotated through > 8x L2, one graph; checked against int4_gemv first."""
import json
import math
import sys

sys.path.insert(0, "bench")
sys.path.insert(0, ".k4/s19")
import torch
import triton
import triton.language as tl
from f8mma_probe import timed
from layout_probe import fusion_for
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import int4_gemv
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION, split_scratch, store_split_row
from tokenmill.kernels.triton.int4_gemv import _BF16X2_WORD_SUM, _bf16_bits
from tokenmill.quantization.triton_gemms import packed_weight


@triton.jit
def _pairs(x, GPS: tl.constexpr):
    """x [GPS*128] fp32 -> p0..p3 [GPS, 16] int32: bf16 pairs (x_8w+i, x_8w+4+i) of each word w."""
    lo, hi = tl.split(tl.permute(tl.reshape(x, [GPS, 16, 2, 4]), (0, 1, 3, 2)))
    bits = tl.reshape(_bf16_bits(lo) | (_bf16_bits(hi) << 16), [GPS, 16, 2, 2])
    even, odd = tl.split(bits)
    p0, p2 = tl.split(even)
    p1, p3 = tl.split(odd)
    return p0, p1, p2, p3


@triton.jit
def _half(p, HI: tl.constexpr):
    bits = (p >> 16) & 0xFFFF if HI else p & 0xFFFF
    return (bits << 16).to(tl.float32, bitcast=True)


@triton.jit
def _sums(words, neg, p0, p1, p2, p3, USE_ASM: tl.constexpr = True):
    shape: tl.constexpr = words.shape
    if not USE_ASM:  # the interpreter: the same sums in fp32
        z = -_half(neg, False) - 128.0
        t = (((words >> 0) & 15).to(tl.float32) - z) * _half(p0, False)
        t += (((words >> 4) & 15).to(tl.float32) - z) * _half(p1, False)
        t += (((words >> 8) & 15).to(tl.float32) - z) * _half(p2, False)
        t += (((words >> 12) & 15).to(tl.float32) - z) * _half(p3, False)
        t += (((words >> 16) & 15).to(tl.float32) - z) * _half(p0, True)
        t += (((words >> 20) & 15).to(tl.float32) - z) * _half(p1, True)
        t += (((words >> 24) & 15).to(tl.float32) - z) * _half(p2, True)
        t += (((words >> 28) & 15).to(tl.float32) - z) * _half(p3, True)
        return t
    return tl.inline_asm_elementwise(
        _BF16X2_WORD_SUM, "=r,r,r,r,r,r,r",
        [words, tl.broadcast_to(neg, shape), tl.broadcast_to(p0, shape), tl.broadcast_to(p1, shape),
         tl.broadcast_to(p2, shape), tl.broadcast_to(p3, shape)],
        dtype=tl.float32, is_pure=True, pack=1,
    )


@triton.jit
def _kp_loads(w_ptr, z_ptr, s_ptr, x_ptr, k0, n, stride_w, stride_z, stride_s, GPS: tl.constexpr):
    g = k0 // 128 + tl.arange(0, GPS)
    rows = (g * 16)[:, None, None] + tl.arange(0, 16)[None, :, None]
    words = tl.load(w_ptr + rows * stride_w + n[None, None, :])
    zw = tl.load(z_ptr + g[:, None] * stride_z + (n // 8)[None, :])
    z = (zw >> ((n % 8) * 4)[None, :]) & 15
    s = tl.load(s_ptr + g[:, None] * stride_s + n[None, :])
    x = tl.load(x_ptr + k0 + tl.arange(0, GPS * 128)).to(tl.float32)
    return words, z, s, x


@triton.jit
def _kp_kernel(x_ptr, w_ptr, z_ptr, s_ptr, out_ptr, partial_ptr, count_ptr, N, K, k_per_split, stride_w,
               stride_z, stride_s, SPLIT: tl.constexpr, BN: tl.constexpr, GPS: tl.constexpr,
               AHEAD: tl.constexpr, USE_ASM: tl.constexpr = True):
    pid = tl.program_id(0)
    split, tile = pid % SPLIT, pid // SPLIT
    n = tile * BN + tl.arange(0, BN)
    k_start = split * k_per_split
    k_end = k_start + k_per_split
    STEP: tl.constexpr = GPS * 128
    a = _kp_loads(w_ptr, z_ptr, s_ptr, x_ptr, k_start, n, stride_w, stride_z, stride_s, GPS)
    if AHEAD == 2:
        b = _kp_loads(w_ptr, z_ptr, s_ptr, x_ptr, tl.minimum(k_start + STEP, k_end - STEP), n, stride_w,
                      stride_z, stride_s, GPS)
    acc = tl.zeros([GPS, 16, BN], tl.float32)
    for k0 in range(k_start, k_end, STEP):
        words, z, s, x = a
        if AHEAD == 2:
            a = b
            b = _kp_loads(w_ptr, z_ptr, s_ptr, x_ptr, tl.minimum(k0 + 2 * STEP, k_end - STEP), n, stride_w,
                          stride_z, stride_s, GPS)
        else:
            a = _kp_loads(w_ptr, z_ptr, s_ptr, x_ptr, tl.minimum(k0 + STEP, k_end - STEP), n, stride_w,
                          stride_z, stride_s, GPS)
        neg = _bf16_bits(-(128.0 + z.to(tl.float32)))
        p0, p1, p2, p3 = _pairs(x, GPS)
        sums = _sums(words, (neg | (neg << 16))[:, None, :], p0[:, :, None], p1[:, :, None], p2[:, :, None],
                     p3[:, :, None], USE_ASM)
        acc += sums * s.to(tl.float32)[:, None, :]
    y = tl.sum(tl.sum(acc, 0), 0)
    store_split_row(y, out_ptr, partial_ptr, count_ptr, tile, split, x_ptr, x_ptr, 0, n, n < N, 0, 0, SPLIT,
                    BN, False, False)


@triton.jit
def _nm_loads(w_ptr, z_ptr, s_ptr, x_ptr, k0, n, stride_w, stride_z, stride_s, GPS: tl.constexpr):
    g = k0 // 128 + tl.arange(0, GPS)
    cols = (g * 16)[None, :, None] + tl.arange(0, 16)[None, None, :]
    words = tl.load(w_ptr + n[:, None, None] * stride_w + cols)
    zw = tl.load(z_ptr + g[None, :] * stride_z + (n // 8)[:, None])
    z = (zw >> ((n % 8) * 4)[:, None]) & 15
    s = tl.load(s_ptr + g[None, :] * stride_s + n[:, None])
    x = tl.load(x_ptr + k0 + tl.arange(0, GPS * 128)).to(tl.float32)
    return words, z, s, x


@triton.jit
def _nm_kernel(x_ptr, w_ptr, z_ptr, s_ptr, out_ptr, partial_ptr, count_ptr, N, K, k_per_split, stride_w,
               stride_z, stride_s, SPLIT: tl.constexpr, BN: tl.constexpr, GPS: tl.constexpr,
               AHEAD: tl.constexpr, USE_ASM: tl.constexpr = True):
    pid = tl.program_id(0)
    split, tile = pid % SPLIT, pid // SPLIT
    n = tile * BN + tl.arange(0, BN)
    k_start = split * k_per_split
    k_end = k_start + k_per_split
    STEP: tl.constexpr = GPS * 128
    a = _nm_loads(w_ptr, z_ptr, s_ptr, x_ptr, k_start, n, stride_w, stride_z, stride_s, GPS)
    if AHEAD == 2:
        b = _nm_loads(w_ptr, z_ptr, s_ptr, x_ptr, tl.minimum(k_start + STEP, k_end - STEP), n, stride_w,
                      stride_z, stride_s, GPS)
    acc = tl.zeros([BN, GPS, 16], tl.float32)
    for k0 in range(k_start, k_end, STEP):
        words, z, s, x = a
        if AHEAD == 2:
            a = b
            b = _nm_loads(w_ptr, z_ptr, s_ptr, x_ptr, tl.minimum(k0 + 2 * STEP, k_end - STEP), n, stride_w,
                          stride_z, stride_s, GPS)
        else:
            a = _nm_loads(w_ptr, z_ptr, s_ptr, x_ptr, tl.minimum(k0 + STEP, k_end - STEP), n, stride_w,
                          stride_z, stride_s, GPS)
        neg = _bf16_bits(-(128.0 + z.to(tl.float32)))
        p0, p1, p2, p3 = _pairs(x, GPS)
        sums = _sums(words, (neg | (neg << 16))[:, :, None], p0[None, :, :], p1[None, :, :], p2[None, :, :],
                     p3[None, :, :], USE_ASM)
        acc += sums * s.to(tl.float32)[:, :, None]
    y = tl.sum(tl.sum(acc, 2), 1)
    store_split_row(y, out_ptr, partial_ptr, count_ptr, tile, split, x_ptr, x_ptr, 0, n, n < N, 0, 0, SPLIT,
                    BN, False, False)


def launch(kind, x, p, wt, out, bn, gps, ahead, split, warps):
    n, k = p.out_features, p.in_features
    kernel, w, sw = (_kp_kernel, p.weight, p.weight.stride(0)) if kind == "kp" else (_nm_kernel, wt, wt.stride(0))
    kernel[(n // bn * split,)](x, w, p.zeros, p.scales, out, **split_scratch(x.device), N=n, K=k,
                               k_per_split=k // split, stride_w=sw, stride_z=p.zeros.stride(0),
                               stride_s=p.scales.stride(0), SPLIT=split, BN=bn, GPS=gps, AHEAD=ahead,
                               USE_ASM=x.is_cuda, num_warps=warps)
    return out


def variants(kind, n, k, sms):
    shapes = [(64, 1), (32, 2), (32, 4), (64, 2), (16, 4)] if kind == "kp" else [(16, 4), (16, 8), (8, 8), (32, 4), (8, 16)]
    for bn, gps in shapes:
        if k % (gps * 128):
            continue
        tiles = n // bn
        for split in (1, 2, 4):
            if split > 1 and tiles * split > 6 * sms:
                continue
            if split == 1 and tiles < sms:
                continue
            if k % (split * gps * 128 * 2):
                continue
            for ahead in (1, 2):
                for warps in (4,):
                    yield bn, gps, ahead, split, warps


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        n = sum(shards)
        first = build(FORMATS["awq"](), inp, shards, dev)
        size = sum(t.numel() * t.element_size() for t in first.parameters())
        layers = [first] + [build(FORMATS["awq"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
        packed = [packed_weight(la) for la in layers]
        assert packed[0].zero_offset == 0 and packed[0].group_size == 128
        wts = [q.weight.t().contiguous() for q in packed]
        xf, fusion = fusion_for(name, inp, n, dev)
        x = torch.randn(1, inp, dtype=torch.bfloat16, device=dev)
        ref = int4_gemv.gemv(x, packed[0], NO_FUSION).float()[0]
        v = {"shipped fused": timed([lambda q=q: int4_gemv.gemv(xf, q, fusion) for q in packed]),
             "shipped plain": timed([lambda q=q: int4_gemv.gemv(x, q, NO_FUSION) for q in packed])}
        for kind in ("kp", "nm"):
            for bn, gps, ahead, split, warps in variants(kind, n, inp, sms):
                key = f"{kind} bn{bn} g{gps} a{ahead} sp{split} w{warps}"
                out = torch.empty(1, n, dtype=torch.bfloat16, device=dev)
                try:
                    launch(kind, x, packed[0], wts[0], out, bn, gps, ahead, split, warps)
                    err = ((out.float()[0] - ref).abs().max() / ref.abs().max()).item()
                    us = timed([lambda q=q, wt=wt: launch(kind, x, q, wt, out, bn, gps, ahead, split, warps)
                                for q, wt in zip(packed, wts)])
                except Exception as e:  # noqa: BLE001
                    print(name, key, "failed", repr(e)[:300], flush=True)
                    continue
                v[key] = us
                print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "TBps": round(size / us / 1e6, 2),
                                  "err": round(err, 5)}), flush=True)
        v["shipped plain again"] = timed([lambda q=q: int4_gemv.gemv(x, q, NO_FUSION) for q in packed])
        for key in ("shipped fused", "shipped plain", "shipped plain again"):
            print(json.dumps({"proj": name, "variant": key, "us": round(v[key], 2), "TBps": round(size / v[key] / 1e6, 2)}), flush=True)
        for key, us in v.items():
            totals.setdefault(key, {})[name] = us
        del layers, packed, wts
        torch.cuda.empty_cache()
    for kind in ("kp", "nm"):
        best = {}
        for key, per in totals.items():
            if not key.startswith(kind):
                continue
            for proj, us in per.items():
                if proj not in best or us < best[proj][1]:
                    best[proj] = (key, round(us, 2))
        print("BEST", kind, json.dumps(best), f"sum {sum(b[1] for b in best.values()):.2f}", flush=True)
    for key in ("shipped fused", "shipped plain", "shipped plain again"):
        print(key, json.dumps({p: round(u, 2) for p, u in totals[key].items()}), f"sum {sum(totals[key].values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
