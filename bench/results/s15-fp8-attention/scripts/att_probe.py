"""Decode attention A/B at Qwen3-4B's shape (32 q heads, 8 KV heads, head_dim 128, 16-token pages), 358
sequences: the tree's kernel against .k4/s15/attention_old.py, alternated, each timed as a CUDA graph of
20 launches; error of each against the fp32 reference of the dequantized cache."""
import importlib.util, json, sys, torch
sys.path.insert(0, ".")
sys.path.insert(0, ".k4/s15")
from att_probe_common import D, KVH, batch, graph, reference, time_graph  # noqa: E402
from tokenmill.kernels.triton import attention as new
spec = importlib.util.spec_from_file_location("attention_old", ".k4/s15/attention_old.py")
old = importlib.util.module_from_spec(spec); sys.modules["attention_old"] = old; spec.loader.exec_module(old)

results = {}
for dtype in (torch.float8_e4m3fn, torch.bfloat16):
    for ctx in (128, 256, 512):
        args = batch(ctx, dtype)
        ref = reference(*args)
        row = {}
        graphs = {}
        for name, mod in (("tree", new), ("old", old)):
            out = mod.decode_attention(*args[:4], D**-0.5, 1, args[4]).float()
            row[f"{name}_max_err"] = (out - ref).abs().max().item()
            row[f"{name}_mean_err"] = (out - ref).abs().mean().item()
            graphs[name] = graph(mod, args)
        times = {"tree": [], "old": []}
        for _ in range(15):
            for name in ("tree", "old"):
                times[name].append(time_graph(*graphs[name]))
        for name in times:
            row[f"{name}_us"] = sorted(times[name])[7]
        kv_bytes = int(args[3].sum()) * KVH * D * 2 * cache_itemsize if (cache_itemsize := args[1].element_size()) else 0
        row["tree_TBps"] = kv_bytes / row["tree_us"] / 1e6
        results[f"{str(dtype).split('.')[-1]} ctx{ctx}"] = row
        print(f"{str(dtype).split('.')[-1]:14s} ctx {ctx:4d}: tree {row['tree_us']:7.1f} us  old {row['old_us']:7.1f} us  "
              f"({row['tree_TBps']:.2f} TB/s tree)  max err tree {row['tree_max_err']:.2e} old {row['old_max_err']:.2e}  "
              f"mean err tree {row['tree_mean_err']:.2e} old {row['old_mean_err']:.2e}", flush=True)
TILINGS = [(64, 2, 3), (64, 4, 3), (64, 2, 1), (64, 4, 1), (64, 2, 2), (32, 2, 3), (128, 4, 3), (128, 4, 2), (128, 8, 2)]
for ctx in (128, 256):
    args = batch(ctx, torch.float8_e4m3fn)
    graphs = {t: graph(new, args, tiling=new.DecodeTiling(*t)) for t in TILINGS}
    times = {t: [] for t in TILINGS}
    for _ in range(9):
        for t in TILINGS:
            times[t].append(time_graph(*graphs[t]))
    row = {str(t): sorted(v)[4] for t, v in times.items()}
    results[f"fp8 tilings ctx{ctx}"] = row
    print(f"fp8 ctx {ctx} tilings (block_n, warps, stages): " + "  ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
json.dump(results, open(sys.argv[1], "w"), indent=1)
