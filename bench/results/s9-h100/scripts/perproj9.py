"""Session 9: single-stream decode on Qwen3-0.6B, base vs one rank-16 adapter: each projection's fused GEMV
time (qkv, o, gate_up, down, told apart by launch order within a step), median over layers and steps."""
import statistics, sys, tempfile
from pathlib import Path
import torch
from torch.profiler import ProfilerActivity, profile
from tokenmill import LLM, SamplingParams
from tokenmill.lora.random_adapters import write_random_adapters

params = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)
NAMES = ("_rms_norm_gemv_kernel", "_gemv_kernel", "_silu_mul_gemv_kernel")
for enable in (False, True, False, True):
  llm = LLM("random:qwen3-0.6b", enable_lora=enable, max_lora_rank=16, max_num_seqs=8)
  engine = llm.engine
  [lora] = write_random_adapters(engine.model_config, Path(tempfile.mkdtemp()), 1, 16)
  for name, req in ((("plain", None),) if not enable else (("base", None), ("lora", lora))):
      engine.add_request(name + str(id(req)) + str(torch.rand(1).item()), list(range(100, 228)), params, False, req)
      for _ in range(10):
          engine.step()
      with profile(activities=[ProfilerActivity.CUDA]) as prof:
          for _ in range(20):
              engine.step()
          torch.cuda.synchronize()
      while engine.has_unfinished_requests():
          engine.step()
      kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and e.name.split("(")[0] in NAMES]
      # per layer: rms(qkv), gemv(o), rms(gate_up), silu(down); the LM head is a _gemv_kernel after the last layer
      per = {"qkv": [], "o": [], "gate_up": [], "down": [], "other": []}
      i = 0
      seq = [(e.name.split("(")[0], e.device_time) for e in kernels]
      while i + 3 < len(seq):
          names = [s[0] for s in seq[i:i + 4]]
          if names == ["_rms_norm_gemv_kernel", "_gemv_kernel", "_rms_norm_gemv_kernel", "_silu_mul_gemv_kernel"]:
              for key, (_, t) in zip(("qkv", "o", "gate_up", "down"), seq[i:i + 4]):
                  per[key].append(t)
              i += 4
          else:
              per["other"].append(seq[i][1]); i += 1
      alls = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
      byname = {}
      for e in alls:
          byname[e.name[:40]] = byname.get(e.name[:40], 0) + e.device_time / 20
      print(name, "kernel us/step", round(sum(byname.values()), 1), {k: round(v, 1) for k, v in sorted(byname.items(), key=lambda kv: -kv[1])[:9]})
      print(name, {k: (round(statistics.median(v), 2), len(v)) for k, v in per.items() if v})
  llm.shutdown()
