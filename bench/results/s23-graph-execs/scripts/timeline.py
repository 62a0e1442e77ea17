"""GPU timeline of the single-stream workload's timed run: device busy time against wall span, and the
idle gaps between consecutive device activities (kernels, copies), largest first with their neighbours.
Usage: python timeline.py TAG FORMATS"""
import collections
import json
import statistics
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tokenmill import LLM, SamplingParams

tag = sys.argv[1]
prompt = list(range(100, 228))
params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
for fmt in sys.argv[2].split(","):
    llm = LLM(model="random:qwen3-8b", quantization=None if fmt == "none" else fmt, max_num_seqs=1,
              max_model_len=512, num_kv_blocks=64)
    llm.generate([prompt], params, use_tqdm=False)
    torch.cuda.synchronize()
    started = time.perf_counter()
    llm.generate([prompt], params, use_tqdm=False)
    torch.cuda.synchronize()
    wall = time.perf_counter() - started
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        llm.generate([prompt], params, use_tqdm=False)
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        trace = json.load(open(f.name))
    ev = [e for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    ev.sort(key=lambda e: e["ts"])
    span = ev[-1]["ts"] + ev[-1]["dur"] - ev[0]["ts"]
    busy = sum(e["dur"] for e in ev)
    gaps = []
    for a, b in zip(ev, ev[1:]):
        g = b["ts"] - (a["ts"] + a["dur"])
        gaps.append((g, a["name"][:50], b["name"][:50]))
    big = [g for g in gaps if g[0] > 3]
    pairs = collections.defaultdict(list)
    for g, a, b in big:
        pairs[(a, b)].append(g)
    print(f"TL {tag} {fmt}: unprofiled wall {wall*1000:.1f} ms = {256/wall:.1f} tok/s; profiled span {span/1000:.1f} ms, "
          f"busy {busy/1000:.1f} ms, {len(ev)} activities, gaps total {sum(g for g, _, _ in gaps)/1000:.1f} ms, "
          f"gaps > 3 us: {len(big)} totalling {sum(g for g, _, _ in big)/1000:.1f} ms", flush=True)
    for (a, b), gs in sorted(pairs.items(), key=lambda kv: -sum(kv[1]))[:12]:
        print(f"TL   {len(gs):5d} x median {statistics.median(gs):8.1f} us  sum {sum(gs)/1000:7.2f} ms  {a} -> {b}", flush=True)
    small = [g for g, _, _ in gaps if 0 < g <= 3]
    print(f"TL   gaps <= 3 us: {len(small)}, sum {sum(small)/1000:.2f} ms, median {statistics.median(small) if small else 0:.2f} us", flush=True)
    names = collections.Counter()
    for e in ev:
        if e["cat"] != "kernel":
            names[e["cat"] + " " + e["name"][:40]] += e["dur"]
    for n, d in names.most_common(6):
        print(f"TL   non-kernel {n}: {d/1000:.2f} ms", flush=True)
    llm.shutdown()
    del llm
    torch.cuda.empty_cache()
