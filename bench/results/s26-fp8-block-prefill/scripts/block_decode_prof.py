"""Probe (s26): torch profile of 16 decode steps (graph replays), fp8 per channel or 128 x 128 blocks
(argv[1]): kernels by GPU time per step, with counts per step."""
import sys
sys.path.insert(0, "bench")
mode = sys.argv[1]
from tokenmill.quantization import config as qc
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod
if mode == "block":
    original = qc.QuantizationConfig.method_for

    def method_for(self, modules):
        method = original(self, modules)
        return Fp8BlockMethod((128, 128), False) if isinstance(method, Fp8ChannelMethod) else method

    qc.QuantizationConfig.method_for = method_for
import torch
from tokenmill import LLM, SamplingParams

llm = LLM(model="random:qwen3-8b", quantization="fp8", max_num_seqs=1, max_model_len=512, num_kv_blocks=64)
short = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
params = SamplingParams(temperature=0, max_tokens=17, ignore_eos=True)
llm.generate([list(range(100, 228))], params, use_tqdm=False)
llm.generate([list(range(300, 428))], short, use_tqdm=False)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    llm.generate([list(range(300, 428))], params, use_tqdm=False)
    torch.cuda.synchronize()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as base:
    llm.generate([list(range(300, 428))], short, use_tqdm=False)
    torch.cuda.synchronize()
rows = {}
for sign, p in ((1, prof), (-1, base)):
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            r = rows.setdefault(e.name[:100], [0, 0.0])
            r[0] += sign
            r[1] += sign * e.device_time
steps = 16
total = sum(v[1] for v in rows.values())
print(mode, f"decode: {sum(v[0] for v in rows.values()) / steps:.0f} launches a step, {total / steps:.1f} us a step")
for name, (n, t) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:16]:
    print(mode, f"  {t / steps:8.1f} us  {n / steps:6.1f}x  {name}")
