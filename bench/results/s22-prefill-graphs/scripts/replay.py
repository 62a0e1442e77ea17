"""Time one decode step's CUDA graph (the layers of a one-token step) by replaying it: us per replay,
median of 7 blocks of 200, for each format named on the command line. Run under each tree's PYTHONPATH."""
import statistics
import sys

import torch

from tokenmill import LLM, SamplingParams

tag = sys.argv[1]
for fmt in sys.argv[2].split(","):
    llm = LLM(model="random:qwen3-8b", quantization=None if fmt == "none" else fmt, max_num_seqs=1,
              max_model_len=512, num_kv_blocks=64)
    llm.generate([list(range(100, 228))], SamplingParams(temperature=0, max_tokens=128, ignore_eos=True), use_tqdm=False)
    graph, _ = llm.engine.runner.graphs._graphs[1]
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
    print(f"REPLAY {tag} {fmt:5} {statistics.median(times):8.1f} us  (min {min(times):.1f}, max {max(times):.1f})", flush=True)
    llm.shutdown()
    del llm, graph
    torch.cuda.empty_cache()
