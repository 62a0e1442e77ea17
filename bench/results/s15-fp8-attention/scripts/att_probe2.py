"""Decode attention variants at Qwen3-4B's shape (32 q heads, 8 KV heads, head_dim 128, 16-token pages), 358
sequences, fp8 cache: each module in VARIANTS x tilings, alternated, timed as CUDA graphs of 20 launches;
error against the fp32 reference of the dequantized cache."""
import importlib.util, json, sys, torch
sys.path.insert(0, ".")
sys.path.insert(0, ".k4/s15")
from att_probe_common import D, batch, graph, reference, time_graph
VARIANTS = {"old": ".k4/s15/attention_old.py", "tree": ".k4/s15/att_tree.py", "v_asm": ".k4/s15/att_v.py", "kv_asm": ".k4/s15/att_kv.py"}
mods = {}
for name, path in VARIANTS.items():
    spec = importlib.util.spec_from_file_location(f"att_{name}", path)
    mods[name] = importlib.util.module_from_spec(spec); sys.modules[f"att_{name}"] = mods[name]; spec.loader.exec_module(mods[name])
TILINGS = [(64, 2, 3), (64, 2, 2), (64, 2, 1), (64, 4, 2), (32, 2, 2)]

results = {}
for ctx in (128, 256, 512):
    args = batch(ctx, torch.float8_e4m3fn)
    ref = reference(*args)
    graphs, errs = {}, {}
    for name, mod in mods.items():
        out = mod.decode_attention(*args[:4], D**-0.5, 1, args[4]).float()
        errs[name] = ((out - ref).abs().max().item(), (out - ref).abs().mean().item())
        for t in TILINGS:
            try:
                graphs[(name, t)] = graph(mod, args, mod.DecodeTiling(*t))
            except Exception as exc:  # a tiling that does not fit
                print(name, t, "failed:", str(exc)[:100])
    times = {k: [] for k in graphs}
    for _ in range(9):
        for k, g in graphs.items():
            times[k].append(time_graph(*g))
    row = {f"{k[0]} {k[1]}": sorted(v)[4] for k, v in times.items()}
    row.update({f"{n} err max/mean": e for n, e in errs.items()})
    results[f"ctx{ctx}"] = row
    print(f"ctx {ctx}: errors " + "  ".join(f"{n} {e[0]:.2e}/{e[1]:.2e}" for n, e in errs.items()))
    for name in mods:
        print(f"  {name:7s} " + "  ".join(f"{t} {row[f'{name} {t}']:.1f}" for t in TILINGS if f"{name} {t}" in row), flush=True)
json.dump(results, open(sys.argv[1], "w"), indent=1)
