"""Why capturing more CUDA graphs slows the decode graph's replay: time graph size 1 (us per replay,
median of 7 x 200) and the gaps between its kernels (profiler, 20 replays), then again after capturing
dummy graphs of N kernels, after deleting them, after re-uploading the decode graph, after releasing
the prefill graphs (patched tree). Usage: python graphs_probe.py TAG MAX_NUM_SEQS N1,N2,..."""
import ctypes
import json
import statistics
import sys
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from tokenmill import LLM, SamplingParams

tag, max_num_seqs = sys.argv[1], int(sys.argv[2])
dummy_sizes = [int(n) for n in sys.argv[3].split(",") if n]
llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=max_num_seqs, max_model_len=512,
          num_kv_blocks=64 * max_num_seqs if max_num_seqs < 8 else 2048)
llm.generate([list(range(100, 228))], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True), use_tqdm=False)
runner = llm.engine.runner
graph, _ = runner.graphs._graphs[1]
print(f"PROBE {tag}: {sum(len(g) for g in [runner.graphs._graphs])} decode graphs", flush=True)


def measure(label):
    for _ in range(50):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(200):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / 200)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            graph.replay()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        ev = [e for e in json.load(open(f.name))["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "kernel"]
    ev.sort(key=lambda e: e["ts"])
    gaps = [b["ts"] - a["ts"] - a["dur"] for a, b in zip(ev, ev[1:])]
    inner = [g for g in gaps if g < 20]
    busy = sum(e["dur"] for e in ev) / 20
    print(f"PROBE {tag} {label:28} {statistics.median(times):8.1f} us/replay  kernels busy {busy:7.1f} us, "
          f"{len(ev)/20:.0f} kernels, gap median {statistics.median(inner):.2f} us, <=0: {sum(g <= 0 for g in inner)/20:.0f}/replay, "
          f"gap sum {sum(inner)/20:.1f} us/replay", flush=True)


measure("as built")
dummies = []
x = torch.zeros(1024, device="cuda")
for n in dummy_sizes:
    g = torch.cuda.CUDAGraph()
    for _ in range(3):
        x.add_(1)
    with torch.cuda.graph(g):
        for _ in range(n):
            x.add_(1)
    g.replay()
    dummies.append(g)
    measure(f"+ dummy graph of {n}")
if dummies:
    for g in dummies:
        g.reset()
    dummies.clear()
    measure("dummies reset")
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    rc = cuda.cuGraphUpload(ctypes.c_void_p(graph.raw_cuda_graph_exec()), ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
    torch.cuda.synchronize()
    measure(f"re-uploaded (rc {rc})")
except Exception as e:  # noqa: BLE001
    print(f"PROBE {tag} upload failed: {e!r}", flush=True)
prefill = getattr(runner, "prefill_graphs", None)
if prefill is not None:
    for graphs in prefill.by_width.values():
        graphs.release()
    torch.cuda.synchronize()
    measure("prefill graphs released")
    cuda.cuGraphUpload(ctypes.c_void_p(graph.raw_cuda_graph_exec()), ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
    measure("  and re-uploaded")
llm.shutdown()
