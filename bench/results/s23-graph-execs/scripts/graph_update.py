"""Could one graph exec serve every decode batch size? Capture the decode forward of several sizes as kept
(uninstantiated) graphs, count their nodes, instantiate one exec (the process's first), then move it from
size to size with cuGraphExecUpdate: result code, host time, replay time, and its output against the
eager forward. Usage: python graph_update.py MODEL QUANT SIZES"""
import ctypes
import statistics
import sys
import time

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.engine.cuda_graphs import StaticInputs

model_name, quant, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
llm = LLM(model=model_name, quantization=None if quant == "none" else quant, max_num_seqs=max(sizes),
          max_model_len=512, num_kv_blocks=2048, enforce_eager=True)
llm.generate([list(range(100, 228))], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)
runner = llm.engine.runner
cuda = ctypes.CDLL("libcuda.so.1")
stream = lambda: ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)  # noqa: E731
static = StaticInputs(max(sizes), runner.inputs.block_table, runner.device, 1)
static.input_ids.copy_(torch.randint(0, 1000, static.input_ids.shape, device=runner.device))
pool = torch.cuda.graph_pool_handle()
graphs, outputs, eager = {}, {}, {}
with torch.inference_mode():
    for size in sorted(sizes, reverse=True):
        meta = static.metadata(size, runner._graph_splits(size))
        eager[size] = runner.model(static.input_ids[:size], static.positions[:size], meta).clone()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph(keep_graph=True)
        with torch.cuda.graph(g, pool=pool):
            outputs[size] = runner.model(static.input_ids[:size], static.positions[:size], meta)
        graphs[size] = g
        count = ctypes.c_size_t(0)
        cuda.cuGraphGetNodes(ctypes.c_void_p(g.raw_cuda_graph()), None, ctypes.byref(count))
        print(f"UPD size {size:4}: {count.value} nodes", flush=True)


def timed(launch, n=100):
    for _ in range(20):
        launch()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            launch()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / n)
    return statistics.median(times)


first = max(sizes)
exec_ = ctypes.c_void_p()
assert cuda.cuGraphInstantiateWithFlags(ctypes.byref(exec_), ctypes.c_void_p(graphs[first].raw_cuda_graph()), ctypes.c_ulonglong(0)) == 0
launch = lambda: cuda.cuGraphLaunch(exec_, stream())  # noqa: E731
info = (ctypes.c_byte * 64)()
for size in [first, *sorted(s for s in sizes if s != first), first]:
    t0 = time.perf_counter()
    rc = cuda.cuGraphExecUpdate_v2(exec_, ctypes.c_void_p(graphs[size].raw_cuda_graph()), ctypes.byref(info))
    host_us = (time.perf_counter() - t0) * 1e6
    if rc != 0:
        print(f"UPD update to {size}: rc {rc}, result {info[0]} ({host_us:.0f} us)", flush=True)
        continue
    launch()
    torch.cuda.synchronize()
    err = (outputs[size].float() - eager[size].float()).abs().max().item()
    us = timed(launch)
    print(f"UPD update to {size:4}: {host_us:7.0f} us on the host, replay {us:8.1f} us, max |graph - eager| {err:.3g}", flush=True)
graphs[1].instantiate()
for _ in range(3):
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        torch.zeros(8, device="cuda").add_(1)
    g.replay()
cuda.cuGraphExecUpdate_v2(exec_, ctypes.c_void_p(graphs[1].raw_cuda_graph()), ctypes.byref(info))
print(f"UPD after 4 more execs: size 1 via the updated exec {timed(launch):8.1f} us", flush=True)
llm.shutdown()
