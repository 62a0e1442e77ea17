"""Probe (s26): the FP8 block GEMM (`fp8_gemm.fp8_block_gemm`, fp8 dots) at 128 / 512 / 2048 token rows,
Qwen3-8B's four projections: the tree's tiles against a sweep of (BLOCK_M, BLOCK_N, warps, stages, split);
the per-channel route (`layer(x)` after use_triton_gemms) for reference. µs by CUDA events over graph
replays of 8 weight copies (> L2)."""
import itertools, json, math, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s19")
import torch, triton
from f8mma_probe import timed
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemm
from tokenmill.kernels.triton import split_k as split
from tokenmill.kernels.triton.fp8_quant import quantize_token_groups
from tokenmill.quantization.triton_gemms import use_triton_gemms


def launch(x, w, s, bm, bn, warps, stages, split_k):
    m, k = x.shape
    n = w.shape[0]
    a, a_s = quantize_token_groups(x, 128)
    a = a.view(torch.uint8)
    gm, gn = triton.cdiv(m, bm), triton.cdiv(n, bn)
    splits, kps = split.plan(k, 128, gm * gn, x.device, split_k)
    out = split.output(x, n, splits)
    fp8_gemm._fp8_block_gemm_kernel[(gm, gn, splits)](
        a, a_s, w.view(torch.uint8), s, out, m, n, k, kps, a.stride(0), a_s.stride(0), w.stride(0), s.stride(0),
        out.stride(0) if splits > 1 else 0, n, BLOCK_OUT=128, FP8_DOT=True, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128,
        DOT="tf32", num_warps=warps, num_stages=stages)
    return split.reduce(out, splits, x.dtype)


dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
summary = {}
for name, (inp, shards) in projections("qwen3-8b").items():
    n = sum(shards)
    first = build(FORMATS["fp8-block"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    copies = max(2, math.ceil(400e6 / size))
    layers = [first] + [build(FORMATS["fp8-block"](), inp, shards, dev) for _ in range(copies - 1)]
    chan = build(FORMATS["fp8-channel"](), inp, shards, dev)
    use_triton_gemms(chan)
    for m in (128, 512, 2048):
        x = torch.randn(m, inp, dtype=torch.bfloat16, device=dev)
        ref = fp8_gemm.fp8_block_gemm(x, first.weight, first.weight_scale_inv, (128, 128)).float()
        res = {"tree": timed([lambda la=la: fp8_gemm.fp8_block_gemm(x, la.weight, la.weight_scale_inv, (128, 128))
                              for la in layers])}
        res["channel"] = timed([lambda: chan(x)] * 4)
        for bm, bn, warps, stages, sk in itertools.product((16, 32, 64, 128), (64, 128, 256), (4, 8), (3, 4), (None,)):
            if bm * bn > 128 * 128 or (bm >= 64 and m < 512 and bm > m):
                continue
            key = f"bm{bm} bn{bn} w{warps} s{stages} split{sk or 'auto'}"
            try:
                got = launch(x, first.weight, first.weight_scale_inv, bm, bn, warps, stages, sk).float()
                err = ((got - ref).abs().max() / ref.abs().max()).item()
                if err > 1e-2:
                    print(name, m, key, "err", err, flush=True)
                    continue
                res[key] = timed([lambda la=la: launch(x, la.weight, la.weight_scale_inv, bm, bn, warps, stages, sk)
                                  for la in layers])
            except Exception as e:  # noqa: BLE001
                print(name, m, key, "failed", repr(e)[:150], flush=True)
        best = sorted((v, k) for k, v in res.items() if k not in ("tree", "channel"))
        print(json.dumps({"proj": name, "m": m, "tree": round(res["tree"], 2), "channel": round(res["channel"], 2),
                          "best": [(round(v, 2), k) for v, k in best[:5]]}), flush=True)
        for k, v in res.items():
            summary.setdefault(m, {}).setdefault(k, 0.0)
            summary[m][k] += v
    del layers
    torch.cuda.empty_cache()
for m, per in summary.items():
    best = sorted((v, k) for k, v in per.items() if k not in ("tree", "channel"))
    print(f"SUM m={m} tree {per['tree']:.1f} channel {per['channel']:.1f} best-common {best[0][1]} {best[0][0]:.1f}",
          json.dumps([(round(v, 1), k) for v, k in best[:6]]), flush=True)
