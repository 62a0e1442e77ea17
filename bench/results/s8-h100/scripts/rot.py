"""GEMVs of Qwen3-8B's projections at one token, each launch on its own copy of the weights (rotated
through more than the L2), inside one CUDA graph: us per launch and TB/s of weight bytes, for bf16 and the
quantized byte/packed kernels over launch shapes. argv: formats (comma), shapes mode ('default' or 'sweep')."""
import itertools, json, math, sys, time
import torch
sys.path.insert(0, "bench")
from quant_gemm import FORMATS, build, projections
from tokenmill.kernels.triton import quant_gemv, skinny_gemm
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight

dev = torch.device("cuda")
formats = sys.argv[1].split(",")
mode = sys.argv[2] if len(sys.argv) > 2 else "default"
extra = sys.argv[3] if len(sys.argv) > 3 else None  # module:function variant for packed formats
PROLOGUE = {"qkv": "norm", "o": "residual", "gate_up": "norm", "down": "silu"}
SHAPES = {False: [quant_gemv.GemvShape(b, t) for b, t in itertools.product((8, 16, 32), (16384, 32768, 65536))],
          True: [quant_gemv.GemvShape(b, t) for b, t in itertools.product((16, 32, 64), (8192, 16384, 32768))]}
variant = None
if extra:
    mod, fn = extra.split(":"); sys.path.insert(0, ".k4"); variant = getattr(__import__(mod), fn)


def nbytes(layer):
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def time_graph(calls, replays=20):
    for c in calls[:2]:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(replays):
        g.replay()
    e.record(); e.synchronize()
    return s.elapsed_time(e) * 1000 / (replays * len(calls))


results = []
for fmt in formats:
    for name, (inp, shards) in projections("qwen3-8b").items():
        one = build(FORMATS[fmt](), inp, shards, dev)
        per = nbytes(one)
        copies = max(2, math.ceil(400e6 / per))
        layers = [one] + [build(FORMATS[fmt](), inp, shards, dev) for _ in range(copies - 1)]
        n = sum(shards)
        kind = PROLOGUE[name]
        width = 2 * inp if kind == "silu" else inp
        x = torch.randn(1, width, dtype=torch.bfloat16, device=dev)
        nw = torch.randn(inp, dtype=torch.bfloat16, device=dev)
        res = torch.randn(1, n, dtype=torch.bfloat16, device=dev)
        fusion = Fusion(norm=(nw, 1e-6) if kind == "norm" else None, silu_mul=kind == "silu",
                        residual=res if kind in ("residual", "silu") else None)
        if fmt == "bf16":
            def call(layer):
                w = layer.weight
                if kind == "norm":
                    return lambda: skinny_gemm.rms_norm_linear(x, nw, 1e-6, w)
                if kind == "silu":
                    return lambda: skinny_gemm.silu_mul_linear(x, w, residual=res)
                return lambda: skinny_gemm.linear(x, w, residual=res)
            shapes = [None]
            us = time_graph([call(l) for l in layers])
            line = dict(format=fmt, proj=name, shape="default", us=round(us, 2), tbps=round(per / us / 1e6, 3), copies=copies)
            print(json.dumps(line), flush=True); results.append(line)
            continue
        packed = [packed_weight(l) for l in layers]
        is_packed = packed[0].format >= 2
        ref = quant_gemv.gemv(x, packed[0], fusion)
        shapes = [None] + (SHAPES[is_packed] if mode == "sweep" else [])
        for shape in shapes:
            try:
                us = time_graph([(lambda p=p, s=shape: quant_gemv.gemv(x, p, fusion, s)) for p in packed])
            except Exception as err:
                print(f"# {fmt} {name} {shape}: {type(err).__name__} {str(err)[:100]}", flush=True); continue
            line = dict(format=fmt, proj=name, shape=repr(shape) if shape else "default", us=round(us, 2),
                        tbps=round(per / us / 1e6, 3), copies=copies)
            print(json.dumps(line), flush=True); results.append(line)
        if variant is not None:
            for kw in getattr(variant, "configs", [{}]):
                try:
                    out = variant(x, packed[0], fusion, **kw)
                    err = (out.float() - ref.float()).abs().max().item() / ref.float().abs().max().item()
                    us = time_graph([(lambda p=p: variant(x, p, fusion, **kw)) for p in packed])
                except Exception as e:
                    print(f"# variant {kw}: {type(e).__name__} {str(e)[:200]}", flush=True); continue
                line = dict(format=fmt, proj=name, shape=f"variant {kw}", us=round(us, 2),
                            tbps=round(per / us / 1e6, 3), rel_err=round(err, 5), copies=copies)
                print(json.dumps(line), flush=True); results.append(line)
        del layers, packed
        torch.cuda.empty_cache()
print("SUMMARY best per (format, proj):")
best = {}
for r in results:
    k = (r["format"], r["proj"])
    if k not in best or r["us"] < best[k]["us"]:
        best[k] = r
for k, r in best.items():
    d = next(x for x in results if x["format"] == k[0] and x["proj"] == k[1] and x["shape"] == "default")
    print(f"  {k[0]:12s} {k[1]:8s} default {d['us']:8.2f} us {d['tbps']:.3f} TB/s | best {r['us']:8.2f} us {r['tbps']:.3f} TB/s {r['shape']}")
