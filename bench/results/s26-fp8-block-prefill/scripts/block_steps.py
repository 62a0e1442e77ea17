"""Probe (s26): step_times for fp8 with 128 x 128 block scales (the loader's fp8 method swapped, as
block_model.py does) when argv[1] == "block", else per channel; then a torch profile of one 128-token
prefill (kernels by total GPU time, with counts)."""
import sys
sys.path.insert(0, "bench")
mode = sys.argv[1]
sys.argv = [sys.argv[0], "--formats", "fp8"]
from tokenmill.quantization import config as qc
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod
if mode == "block":
    original = qc.QuantizationConfig.method_for

    def method_for(self, modules):
        method = original(self, modules)
        return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method

    qc.QuantizationConfig.method_for = method_for
import torch
import step_times
from tokenmill import LLM, SamplingParams

step_times.main()
llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=1, max_model_len=512, num_kv_blocks=64)
params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
llm.generate([list(range(100, 228))], params, use_tqdm=False)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    llm.generate([list(range(300, 428))], params, use_tqdm=False)
    torch.cuda.synchronize()
rows = {}
for e in prof.events():
    if e.device_type == torch.autograd.DeviceType.CUDA:
        r = rows.setdefault(e.name[:90], [0, 0.0])
        r[0] += 1
        r[1] += e.device_time
total = sum(v[1] for v in rows.values())
print(mode, f"prefill kernels: {sum(v[0] for v in rows.values())} launches, {total / 1000:.2f} ms GPU")
for name, (n, t) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:14]:
    print(mode, f"  {t / 1000:7.3f} ms  {n:5d}x  {name}")
