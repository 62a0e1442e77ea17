"""(1) After the slow mode set in (4 execs), destroy every exec and capture the decode graph anew in a new
pool: fast again? (2) One exec holding the decode forward in conditional (IF) bodies, plus N-1 IF nodes
whose bodies are one small kernel and whose predicate is false: its replay time in the fast and the slow
mode. Usage: python graph_cond.py TAG MODE  (MODE: recapture | cond)"""
import statistics
import sys

import torch

from tokenmill import LLM, SamplingParams

tag, mode = sys.argv[1], sys.argv[2]
llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=1, max_model_len=512, num_kv_blocks=64)
llm.generate([list(range(100, 228))], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
runner = llm.engine.runner
graph, _ = runner.graphs._graphs[1]
static = runner.graphs._static
meta = static.metadata(1, runner._graph_splits(1))


def forward():
    runner.model(static.input_ids[:1], static.positions[:1], meta)


def measure(label, replay):
    for _ in range(30):
        replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(100):
            replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / 100)
    print(f"CND {tag} {label:55} {statistics.median(times):8.1f} us/replay", flush=True)


x = torch.zeros(1024, device="cuda")
x.add_(1)


def dummies(n):
    out = []
    for _ in range(n):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(10):
                x.add_(1)
        g.replay()
        out.append(g)
    return out


measure("as built (1 exec)", graph.replay)
print("CND has if:", hasattr(torch.cuda.CUDAGraph, "begin_capture_to_if_node"), torch.__version__, flush=True)
if mode == "recapture":
    extra = dummies(3)
    measure("+3 dummies (4 execs)", graph.replay)
    for g in extra:
        g.reset()
    graph.reset()
    torch.cuda.synchronize()
    fresh = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(fresh):
        forward()
    fresh.replay()
    measure("all destroyed, captured anew in a new pool", fresh.replay)
    more = dummies(2)
    measure("  + 2 dummies (3 execs live, 6 ever)", fresh.replay)
else:
    for n_if in (1, 8, 20):
        preds = [torch.zeros((), dtype=torch.bool, device="cuda") for _ in range(n_if)]
        preds[-1].fill_(True)
        cond = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(cond, pool=runner.graphs.pool):
            capturing = cond
            for i, pred in enumerate(preds):
                capturing.begin_capture_to_if_node(pred)
                if i == n_if - 1:
                    forward()
                else:
                    x.add_(1)
                capturing.end_capture_to_conditional_node()
        cond.replay()
        measure(f"one exec, {n_if} IF nodes, the last true (decode forward)", cond.replay)
        measure("the plain decode graph", graph.replay)
    extra = dummies(3)
    measure("+3 dummies: the plain decode graph", graph.replay)
    measure("+3 dummies: the conditional exec", cond.replay)
llm.shutdown()
