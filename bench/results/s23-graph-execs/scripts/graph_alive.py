"""Is the slow chaining set by the execs alive at once or by every exec ever made? Make and destroy one
dummy exec ten times (never more than 2 alive), then keep 2, then 3 dummies alive; time the decode graph
(size 1) after each. Usage: python graph_alive.py TAG"""
import statistics
import sys

import torch

from tokenmill import LLM, SamplingParams

tag = sys.argv[1]
llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=1, max_model_len=512, num_kv_blocks=64)
llm.generate([list(range(100, 228))], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
graph, _ = llm.engine.runner.graphs._graphs[1]


def measure(label):
    for _ in range(30):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(100):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / 100)
    print(f"ALV {tag} {label:50} {statistics.median(times):8.1f} us/replay", flush=True)


x = torch.zeros(1024, device="cuda")
x.add_(1)


def dummy():
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(10):
            x.add_(1)
    g.replay()
    torch.cuda.synchronize()
    return g


measure("as built (1 exec)")
for i in range(10):
    g = dummy()
    g.reset()
    del g
    torch.cuda.synchronize()
measure("10 dummies made and destroyed one at a time")
kept = [dummy(), dummy()]
measure("2 dummies alive (3 execs)")
kept.append(dummy())
measure("3 dummies alive (4 execs)")
llm.shutdown()
