"""Where the device idles in a single-stream decode (async scheduling, CUDA graphs): kernel intervals from
torch.profiler over 60 steps of the real step loop; busy share, and the largest gaps with the kernel after."""
import sys, torch
from collections import Counter
from torch.profiler import ProfilerActivity, profile
from tokenmill import LLM, SamplingParams
fmt = sys.argv[1] if len(sys.argv) > 1 else "fp8"
llm = LLM("random:qwen3-8b", max_num_seqs=1, max_model_len=1024, num_kv_blocks=64,
          quantization=None if fmt == "none" else fmt)
engine = llm.engine
engine.add_request("a", list(range(100, 228)), SamplingParams(temperature=0, max_tokens=400, ignore_eos=True), False)
for _ in range(40):
    engine.step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(60):
        engine.step()
    torch.cuda.synchronize()
kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                 if e.device_type == torch.autograd.DeviceType.CUDA)
span = kernels[-1][1] - kernels[0][0]
busy, end = 0.0, kernels[0][0]
gaps = []
for start, stop, name in kernels:
    if start > end:
        gaps.append((start - end, name))
    busy += max(0.0, stop - max(start, end))
    end = max(end, stop)
print(f"{fmt}: span {span / 60:.1f} us per step, busy {busy / 60:.1f} us per step ({busy / span:.1%})")
big = Counter()
for gap, name in gaps:
    if gap > 3:
        big[name[:60]] += gap
for name, total in big.most_common(8):
    print(f"   {total / 60:8.1f} us/step idle before {name}")
while engine.has_unfinished_requests():
    engine.step()
llm.shutdown()
