import json, glob, os, sys
for f in sorted(glob.glob(sys.argv[1] + "/probe*.jsonl")):
    for line in open(f):
        try:
            r = json.loads(line)
        except Exception:
            print(line[:300]); continue
        v = {k: x for k, x in r.items() if k.startswith("v_") and not k.endswith("err")}
        e = {k: x for k, x in r.items() if k.endswith("err")}
        print(r["model"], r["proj"], r["m"], "tree", r["tree_us"], "cbl", r.get("cublas_block_gemm_us"), "ten", r["cublas_tensor_fast_us"], "q", r["quant_us"], " ".join(f"{k[2:-3]}={x}" for k, x in v.items()))
        bad = {k: x for k, x in e.items() if x > 0.05}
        if bad: print("  ERR", bad)
