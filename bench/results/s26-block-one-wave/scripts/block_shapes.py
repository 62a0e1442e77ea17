"""Probe (s26): fp8_gemv launch shapes for 128 x 128 block-scaled weights (FP8 checkpoints), Qwen3-8B's four
projections at one token, fused, weights rotated through > 8x L2 in one graph; the per-channel tree for
reference."""
import itertools, json, math, sys
sys.path.insert(0, "bench"); sys.path.insert(0, ".k4/s19")
import torch
from f8mma_probe import timed
from layout_probe import fusion_for
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import fp8_gemv
from tokenmill.quantization.triton_gemms import packed_weight


class Capped:
    def __init__(self, kernel):
        self.kernel, self.cap = kernel, "tree"

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(**kw):
            if self.cap != "tree":
                kw.pop("maxnreg", None)
                if self.cap:
                    kw["maxnreg"] = self.cap
            return launch(**kw)
        return run


capped = Capped(fp8_gemv._fp8_gemv_kernel)
fp8_gemv._fp8_gemv_kernel = capped
dev = torch.device("cuda")
print(torch.cuda.get_device_name(), flush=True)
B = (128, 128)
tree_sum, best_sum, chan_sum = 0.0, 0.0, 0.0
for name, (inp, shards) in projections("qwen3-8b").items():
    n = sum(shards)
    first = build(FORMATS["fp8-block"](), inp, shards, dev)
    size = sum(t.numel() * t.element_size() for t in first.parameters())
    layers = [first] + [build(FORMATS["fp8-block"](), inp, shards, dev) for _ in range(math.ceil(500e6 / size))]
    x, fusion = fusion_for(name, inp, n, dev)
    ref = fp8_gemv.gemv(x, first.weight, first.weight_scale_inv, fusion, block=B).float()
    chans = [packed_weight(build(FORMATS["fp8-channel"](), inp, shards, dev)) for _ in range(math.ceil(500e6 / size) + 1)]
    capped.cap = "tree"
    chan = timed([lambda q=q: fp8_gemv.gemv(x, q.weight, q.scales, fusion) for q in chans])
    del chans
    variants = [("tree", {})]
    for bn, bk, w in itertools.product((16, 32, 64), (256, 512, 1024), (4, 8)):
        r = bn * bk // 4 // (32 * w)
        if 4 <= r <= 64:
            for cap in (None, 80):
                for deep in (True, False):
                    variants.append((cap, dict(block_n=bn, block_k=bk, num_warps=w, deep=deep)))
    best = []
    for cap, kw in variants:
        capped.cap = cap
        key = f"cap{cap} " + " ".join(f"{k}{v}" for k, v in kw.items())
        try:
            got = fp8_gemv.gemv(x, first.weight, first.weight_scale_inv, fusion, block=B, **kw).float()
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            us = timed([lambda la=la: fp8_gemv.gemv(x, la.weight, la.weight_scale_inv, fusion, block=B, **kw) for la in layers])
        except Exception as e:  # noqa: BLE001
            print(name, key, "failed", repr(e)[:200], flush=True)
            continue
        best.append((us, key))
        print(json.dumps({"proj": name, "variant": key, "us": round(us, 2), "err": round(err, 6)}), flush=True)
    best.sort()
    tree = [u for u, k in best if k.startswith("captree")][0]
    tree_sum += tree; best_sum += best[0][0]; chan_sum += chan
    print("BEST", name, f"channel-tree {chan:.2f} block-tree {tree:.2f}", json.dumps([(round(u, 2), k) for u, k in best[:5]]), flush=True)
    del layers
    torch.cuda.empty_cache()
print(f"SUM channel-tree {chan_sum:.2f} block-tree {tree_sum:.2f} block-best {best_sum:.2f}", flush=True)
