"""Probe: do tile-contiguous weight layouts (each program's K step one contiguous block) or more programs
per SM speed up the 1-row 4-bit and fp8 GEMVs? Qwen3-8B projections, own weight copies rotated through
> 8x L2, one CUDA graph per variant; checks each variant's output against the shipped kernel."""
import json, math, sys
sys.path.insert(0, "bench")
import torch, triton, triton.language as tl
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemv, int4_gemv, gemv_fusion, quant_gemv
from tokenmill.kernels.triton.gemv_fusion import (Fusion, row_loads, row_rstd, split_count, split_program,
                                                  split_scratch, store_split_row)
from tokenmill.kernels.triton.gemv_rows import prologue_finish
from tokenmill.kernels.triton.packed_int import zero_points
from tokenmill.kernels.triton.split_k import num_sms
from tokenmill.quantization.triton_gemms import packed_weight


@triton.jit
def _i4_loads(w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, k0, K, tile, n, n_mask, stride_zg,
              stride_sg, ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr,
              BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    WR: tl.constexpr = BLOCK_K // 8
    steps = K // BLOCK_K
    r = tl.arange(0, WR)
    c = tl.arange(0, BLOCK_N)
    words = tl.load(w_ptr + ((tile * steps + k0 // BLOCK_K) * WR + r)[:, None] * BLOCK_N + c[None, :])
    group = tl.zeros([1], tl.int32) + k0 // GROUP
    zeros = zero_points(zero_ptr, group, n, n_mask, stride_zg, 4, ZERO_OFFSET)
    scales = tl.load(scale_ptr + group[:, None] * stride_sg + n[None, :], mask=n_mask, other=0.0)
    x, second = row_loads(x_row, k0 + tl.arange(0, BLOCK_K), K, norm_weight_ptr, PROLOGUE)
    return words, zeros, scales, x, second


@triton.jit(do_not_specialize=["rows"])
def _i4_tiled(x_ptr, w_ptr, scale_ptr, zero_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr,
              count_ptr, rows, N, K, k_per_split, stride_x, stride_sg, stride_zg, stride_o, stride_r, eps,
              ZERO_OFFSET: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr):
    WORD_ROWS: tl.constexpr = BLOCK_K // 8
    split, tile_row, row, n, k_start, k_end = split_program(rows, K, k_per_split, SPLIT, BLOCK_N)
    tile = tile_row // rows
    n_mask = (n < N)[None, :]
    x_row = x_ptr + row * stride_x
    loaded = _i4_loads(w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr, k_start, K, tile, n, n_mask,
                       stride_zg, stride_sg, ZERO_OFFSET, GROUP, PROLOGUE, BLOCK_K, BLOCK_N)
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([WORD_ROWS, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        words, zeros, scales, x, second = loaded
        loaded = _i4_loads(w_ptr, zero_ptr, scale_ptr, x_row, norm_weight_ptr,
                           tl.minimum(k0 + BLOCK_K, k_end - BLOCK_K), K, tile, n, n_mask, stride_zg,
                           stride_sg, ZERO_OFFSET, GROUP, PROLOGUE, BLOCK_K, BLOCK_N)
        x = prologue_finish(x, second, rstd, PROLOGUE)
        lo, hi = tl.split(tl.permute(tl.reshape(x, [WORD_ROWS, 2, 4]), (0, 2, 1)))
        acc += int4_gemv._word_sums(words, zeros, lo, hi, WORD_ROWS, BLOCK_N, True) * scales.to(tl.float32)
    store_split_row(tl.sum(acc, 0), out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr,
                    row, n, n < N, stride_o, stride_r, SPLIT, BLOCK_N, HAS_BIAS, HAS_RESIDUAL)


def i4_tile(words, block_n=64, block_k=128):
    kw, n = words.shape
    wr = block_k // 8
    return words.view(kw // wr, wr, n // block_n, block_n).permute(2, 0, 1, 3).contiguous()


def i4_tiled_gemv(x, p, tiled, fusion, pps):
    rows, k, n = x.shape[0], fusion.in_features(x), p.out_features
    out = x.new_empty(rows, n)
    tiles = n // 64
    old = gemv_fusion.SPLIT_PROGRAMS_PER_SM
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = pps
    split = split_count(tiles, k, 128, 64, num_sms(x.device))
    gemv_fusion.SPLIT_PROGRAMS_PER_SM = old
    _, _, stride_sg, stride_zg = p.strides()
    _i4_tiled[(tiles * rows * split,)](
        x, tiled, p.scales, p.zeros, out, **split_scratch(x.device), rows=rows, N=n, K=k,
        k_per_split=k // split, stride_x=x.stride(0), stride_sg=stride_sg, stride_zg=stride_zg,
        stride_o=out.stride(0), **fusion.kernel_args(x), ZERO_OFFSET=p.zero_offset, GROUP=p.group_size,
        SPLIT=split, BLOCK_N=64, BLOCK_K=128, num_warps=4)
    return out


@triton.jit
def _f8_words(w_ptr, k0, k_end, tile, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    WORDS: tl.constexpr = BLOCK_K // 4
    steps = K // BLOCK_K
    r = tl.arange(0, BLOCK_N)
    w = tl.arange(0, WORDS)
    ok = k0 < k_end
    return tl.load(w_ptr + ((tile * steps + k0 // BLOCK_K) * BLOCK_N + r)[:, None] * WORDS + w[None, :],
                   mask=ok, other=0)


@triton.jit(do_not_specialize=["rows"])
def _f8_tiled(x_ptr, w_ptr, scale_ptr, out_ptr, norm_weight_ptr, bias_ptr, residual_ptr, partial_ptr, count_ptr,
              rows, N, K, k_per_split, stride_x, stride_o, stride_r, eps, SPLIT: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr):
    WORDS: tl.constexpr = BLOCK_K // 4
    split, tile_row, row, n, k_start, k_end = split_program(rows, K, k_per_split, SPLIT, BLOCK_N)
    tile = tile_row // rows
    n_mask = n < N
    x_row = x_ptr + row * stride_x
    words = _f8_words(w_ptr, k_start, k_end, tile, K, BLOCK_N, BLOCK_K)
    x, second = row_loads(x_row, k_start + tl.arange(0, BLOCK_K), K, norm_weight_ptr, PROLOGUE)
    rstd = row_rstd(x_row, K, eps, PROLOGUE, NORM_BLOCK)
    acc = tl.zeros([BLOCK_N, WORDS], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        current, x_now, second_now = words, x, second
        words = _f8_words(w_ptr, k0 + BLOCK_K, k_end, tile, K, BLOCK_N, BLOCK_K)
        x, second = row_loads(x_row, k0 + BLOCK_K + tl.arange(0, BLOCK_K), K, norm_weight_ptr, PROLOGUE)
        acc = fp8_gemv._word_fma(acc, current, prologue_finish(x_now, second_now, rstd, PROLOGUE), WORDS,
                                 True, True)
    y = tl.sum(acc, 1) * tl.load(scale_ptr + n, mask=n_mask, other=0.0)
    store_split_row(y, out_ptr, partial_ptr, count_ptr, tile_row, split, bias_ptr, residual_ptr, row, n, n_mask,
                    stride_o, stride_r, SPLIT, BLOCK_N, HAS_BIAS, HAS_RESIDUAL)


def f8_tile(weight, block_n, block_k):
    n, k = weight.shape
    w = weight.view(torch.int32)
    return w.view(n // block_n, block_n, k // block_k, block_k // 4).permute(0, 2, 1, 3).contiguous()


def f8_tiled_gemv(x, weight, scales, tiled, fusion, block_n, block_k, warps, split_mode):
    rows, k, n = x.shape[0], fusion.in_features(x), weight.shape[0]
    out = x.new_empty(rows, n)
    tiles = n // block_n
    split = 1 if split_mode == "none" else split_count(tiles, k, block_k, block_n, num_sms(x.device))
    _f8_tiled[(tiles * rows * split,)](
        x, tiled, scales, out, **split_scratch(x.device), rows=rows, N=n, K=k, k_per_split=k // split,
        stride_x=x.stride(0), stride_o=out.stride(0), **fusion.kernel_args(x), SPLIT=split, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=warps)
    return out


def timed(calls, replays=20):
    for c in calls[:2]:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay(); torch.cuda.synchronize()
    res = []
    for _ in range(3):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(replays):
            g.replay()
        e.record(); e.synchronize()
        res.append(s.elapsed_time(e) * 1000 / (replays * len(calls)))
    return sorted(res)[1]


def fusion_for(name, inp, out, device):
    kind = {"qkv": "norm", "o": "res", "gate_up": "norm", "down": "silu"}[name]
    x = torch.randn(1, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=device)
    norm = torch.randn(inp, dtype=torch.bfloat16, device=device)
    res = torch.randn(1, out, dtype=torch.bfloat16, device=device)
    return x, Fusion(norm=(norm, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                     residual=None if kind == "norm" else res)


def main():
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    totals = {}
    for name, (inp, shards) in projections("qwen3-8b").items():
        out_f = sum(shards)
        x, fusion = fusion_for(name, inp, out_f, device)
        # int4 (AWQ repacked)
        layers = []
        first = build(FORMATS["awq"](), inp, shards, device)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["awq"](), inp, shards, device) for _ in range(math.ceil(500e6 / size))]
        packed = [packed_weight(la) for la in layers]
        tiled = [i4_tile(p.weight) for p in packed]
        ref = int4_gemv.gemv(x, packed[0], fusion).float()
        got = i4_tiled_gemv(x, packed[0], tiled[0], fusion, 2).float()
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        v = {"int4 shipped": timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed])}
        for pps in (2, 4, 8):
            old = gemv_fusion.SPLIT_PROGRAMS_PER_SM
            gemv_fusion.SPLIT_PROGRAMS_PER_SM = pps
            v[f"int4 pps{pps}"] = timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed])
            gemv_fusion.SPLIT_PROGRAMS_PER_SM = old
            v[f"int4 tiled pps{pps}"] = timed([lambda p=p, t=t: i4_tiled_gemv(x, p, t, fusion, pps)
                                              for p, t in zip(packed, tiled)])
        v["int4 shipped again"] = timed([lambda p=p: int4_gemv.gemv(x, p, fusion) for p in packed])
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "TBps": round(size / us / 1e6, 2),
                              "err_vs_shipped": round(err, 5)}), flush=True)
            totals[key] = totals.get(key, 0) + us
        del layers, packed, tiled
        torch.cuda.empty_cache()
        # fp8 per channel
        first = build(FORMATS["fp8-channel"](), inp, shards, device)
        size = sum(p.numel() * p.element_size() for p in first.parameters())
        layers = [first] + [build(FORMATS["fp8-channel"](), inp, shards, device) for _ in range(math.ceil(500e6 / size))]
        ws = [(la.weight, la.weight_scale) for la in layers]
        v = {"fp8 shipped": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion) for w, s in ws]),
             "fp8 shallow": timed([lambda w=w, s=s: fp8_gemv.gemv(x, w, s, fusion, deep=False) for w, s in ws])}
        for bn, bk, warps, sm in ((16, 512, 4, "split"), (16, 1024, 8, "none"), (16, 512, 4, "none"),
                                  (32, 512, 8, "split"), (8, 1024, 4, "split")):
            tl_ = [f8_tile(w, bn, bk) for w, _ in ws]
            ref = fp8_gemv.gemv(x, ws[0][0], ws[0][1], fusion).float()
            got = f8_tiled_gemv(x, ws[0][0], ws[0][1], tl_[0], fusion, bn, bk, warps, sm).float()
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            key = f"fp8 tiled {bn}x{bk} w{warps} {sm}"
            v[key] = timed([lambda w=w, s=s, t=t: f8_tiled_gemv(x, w, s, t, fusion, bn, bk, warps, sm)
                            for (w, s), t in zip(ws, tl_)])
            print(json.dumps({"proj": name, "variant": key, "err": round(err, 6)}), flush=True)
            del tl_
        for key, us in v.items():
            print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "TBps": round(size / us / 1e6, 2)}),
                  flush=True)
            totals[key] = totals.get(key, 0) + us
        del layers, ws
        torch.cuda.empty_cache()
    for key, us in totals.items():
        print(f"TOTAL {key:32s} {us:7.2f} us/layer", flush=True)


if __name__ == "__main__":
    main()
