"""Is the slow replay sticky, per stream, per graph exec? After 3 dummy graphs (4 execs: slow), replay
the decode graph on a new stream; destroy the dummies and capture a new exec of the decode graph; and
instantiate the kept graph ourselves with driver flags. Usage: python graph_sticky.py TAG"""
import ctypes
import statistics
import sys

import torch

from tokenmill import LLM, SamplingParams

tag = sys.argv[1]
llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=1, max_model_len=512, num_kv_blocks=64)
llm.generate([list(range(100, 228))], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
runner = llm.engine.runner
graph, _ = runner.graphs._graphs[1]
cuda = ctypes.CDLL("libcuda.so.1")


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
    print(f"STK {tag} {label:50} {statistics.median(times):8.1f} us/replay", flush=True)


def recapture(keep=False):
    static = runner.graphs._static
    meta = static.metadata(1, runner._graph_splits(1))
    g = torch.cuda.CUDAGraph(keep_graph=keep) if keep else torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(g, pool=runner.graphs.pool):
        runner.model(static.input_ids[:1], static.positions[:1], meta)
    return g


def driver_exec(g, flags):
    exec_ = ctypes.c_void_p()
    rc = cuda.cuGraphInstantiateWithFlags(ctypes.byref(exec_), ctypes.c_void_p(g.raw_cuda_graph()), ctypes.c_ulonglong(flags))
    assert rc == 0, rc

    def launch():
        cuda.cuGraphLaunch(exec_, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
    return launch


measure("as built", graph.replay)
fresh = recapture()
fresh.replay()
measure("a second exec of it (2 execs)", fresh.replay)
measure("the first again", graph.replay)
x = torch.zeros(1024, device="cuda")
x.add_(1)
dummies = []
for _ in range(3):
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(10):
            x.add_(1)
    g.replay()
    dummies.append(g)
    measure(f"+ dummy ({2 + len(dummies)} execs)", graph.replay)
stream = torch.cuda.Stream()
with torch.cuda.stream(stream):
    measure("on a new stream", graph.replay)
high = torch.cuda.Stream(priority=-1)
with torch.cuda.stream(high):
    measure("on a new high-priority stream", graph.replay)
for g in dummies:
    g.reset()
fresh.reset()
dummies.clear()
torch.cuda.synchronize()
measure("dummies and second exec destroyed (1 exec)", graph.replay)
graph.reset()
torch.cuda.synchronize()
again = recapture()
again.replay()
measure("all destroyed, decode graph captured anew", again.replay)
kept = recapture(keep=True)
kept.instantiate()
kept.replay()
measure("kept graph, torch's exec", kept.replay)
for flags in (0, 1, 2, 8):
    try:
        launch = driver_exec(kept, flags)
        launch()
        measure(f"kept graph, driver exec flags {flags}", launch)
    except Exception as e:  # noqa: BLE001
        print(f"STK {tag} flags {flags}: {e!r}", flush=True)
llm.shutdown()
