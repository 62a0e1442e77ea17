"""Session 9: a single 128-token prefill on Qwen3-0.6B, base vs one rank-16 adapter: wall per step (synchronised),
GPU kernel time (profiler), and the host cost of one batched lora_expand launch."""
import tempfile, time
from pathlib import Path
import torch
from torch.profiler import ProfilerActivity, profile
from tokenmill import LLM, SamplingParams
from tokenmill.lora.random_adapters import write_random_adapters
from tokenmill.kernels.triton import lora as tl_lora

def step_ms(engine):
    torch.cuda.synchronize(); t = time.perf_counter(); engine.step(); torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1000

llm = LLM("random:qwen3-0.6b", enable_lora=True, max_lora_rank=16, max_num_seqs=8, async_scheduling=False)
engine = llm.engine
[lora] = write_random_adapters(engine.model_config, Path(tempfile.mkdtemp()), 1, 16)
prompt = list(range(100, 228))
params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
for name, req in (("base", None), ("lora", lora), ("base", None), ("lora", lora)):
    times = []
    for i in range(8):
        engine.add_request(f"{name}{i}{time.time()}", prompt, params, False, req)
        times.append(step_ms(engine))
        while engine.has_unfinished_requests():
            engine.step()
    print(f"{name}: prefill step wall ms {[round(t, 2) for t in times]}")
for name, req in (("base", None), ("lora", lora)):
    engine.add_request(f"p{name}", prompt, params, False, req)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        engine.step(); torch.cuda.synchronize()
    while engine.has_unfinished_requests():
        engine.step()
    ev = [e for e in prof.key_averages() if e.device_time_total and not e.key.startswith("aten::")]
    gpu = sum(e.device_time_total for e in ev) / 1000
    print(f"{name}: GPU kernel time of the prefill step {gpu:.3f} ms in {sum(e.count for e in ev)} launches")
    for e in sorted(ev, key=lambda e: -e.device_time_total)[:8]:
        print(f"    {e.device_time_total:9.1f} us {e.count:5d}  {e.key[:70]}")
    cpu = sorted([e for e in prof.key_averages() if e.cpu_time_total], key=lambda e: -e.self_cpu_time_total)[:12]
    for e in cpu:
        print(f"    cpu self {e.self_cpu_time_total:9.1f} us {e.count:5d}  {e.key[:70]}")
llm.shutdown()
