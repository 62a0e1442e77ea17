"""When does the decode graph's replay turn slow? Capture dummy graphs step by step (N add_ kernels each)
and time graph size 1 after each (us per replay, median of 5 x 100).
Usage: python graph_threshold.py TAG MAX_NUM_SEQS STEP TOTAL [noupload]"""
import statistics
import sys

import torch

from tokenmill import LLM, SamplingParams

tag, max_num_seqs, step, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
upload = "noupload" not in sys.argv
llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=max_num_seqs, max_model_len=512,
          num_kv_blocks=64 if max_num_seqs == 1 else 2048)
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
    print(f"THR {tag} {label:40} {statistics.median(times):8.1f} us/replay", flush=True)


measure("as built")
x = torch.zeros(1024, device="cuda")
x.add_(1)
dummies, nodes = [], 0
while nodes < total:
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(step):
            x.add_(1)
    nodes += step
    dummies.append(g)
    if upload:
        g.replay()
    measure(f"+{nodes} dummy nodes ({len(dummies)} graphs{'' if upload else ', never launched'})")
if not upload:
    for g in dummies:
        g.replay()
    measure("dummies launched once")
llm.shutdown()
