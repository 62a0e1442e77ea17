"""Where a single stream's 128-token prefill step goes: host time to build its inputs and to launch its
forward pass (eager: no graph), and the GPU time of that forward pass (CUDA events), per format."""
import sys
import time

import torch

from tokenmill import LLM, SamplingParams

for fmt in sys.argv[1].split(","):
    llm = LLM(model="random:qwen3-8b", quantization=None if fmt == "none" else fmt, max_num_seqs=1,
              max_model_len=512, num_kv_blocks=64)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    llm.generate([list(range(100, 228))], params, use_tqdm=False)
    runner, records = llm.engine.runner, []
    run_model, build = runner.run_model, runner.inputs.build_inputs

    def timed_build(*args, **kwargs):
        t0 = time.perf_counter()
        out = build(*args, **kwargs)
        records.append(("build", time.perf_counter() - t0, None))
        return out

    def timed_run(inputs, use_graph):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        out = run_model(inputs, use_graph)
        end.record()
        records.append(("run_model graph" if use_graph else "run_model eager", time.perf_counter() - t0, (start, end)))
        return out

    runner.inputs.build_inputs, runner.run_model = timed_build, timed_run
    for trial in range(3):
        records.clear()
        t0 = time.perf_counter()
        llm.generate([list(range(1000 + 200 * trial, 1128 + 200 * trial))], params, use_tqdm=False)
        wall = time.perf_counter() - t0
        torch.cuda.synchronize()
        for name, host, events in records[:4]:
            gpu = events[0].elapsed_time(events[1]) if events else float("nan")
            print(f"PREFILL {fmt:5} trial {trial} {name:16} host {host * 1e3:7.2f} ms  gpu {gpu:7.2f} ms", flush=True)
        print(f"PREFILL {fmt:5} trial {trial} generate of 4 tokens {wall * 1e3:.1f} ms", flush=True)
    llm.shutdown()
    del llm
    torch.cuda.empty_cache()
