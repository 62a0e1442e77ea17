"""Session 9: where the host time of a LoRA prefill step goes (cProfile), base vs one adapter, Qwen3-0.6B, 128 tokens."""
import cProfile, pstats, tempfile, time, io
from pathlib import Path
import torch
from tokenmill import LLM, SamplingParams
from tokenmill.lora.random_adapters import write_random_adapters

llm = LLM("random:qwen3-0.6b", enable_lora=True, max_lora_rank=16, max_num_seqs=8, async_scheduling=False)
engine = llm.engine
[lora] = write_random_adapters(engine.model_config, Path(tempfile.mkdtemp()), 1, 16)
prompt = list(range(100, 228))
params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
def prefill(name, req, prof=None):
    engine.add_request(f"{name}{time.time()}", prompt, params, False, req)
    torch.cuda.synchronize(); t = time.perf_counter()
    if prof: prof.enable()
    engine.step(); torch.cuda.synchronize()
    if prof: prof.disable()
    ms = (time.perf_counter() - t) * 1000
    while engine.has_unfinished_requests():
        engine.step()
    return ms
for _ in range(3):
    prefill("w", None); prefill("w", lora)
for name, req in (("base", None), ("lora", lora)):
    prof = cProfile.Profile()
    ms = [prefill(name, req, prof) for _ in range(5)]
    print(f"=== {name}: {[round(m, 2) for m in ms]} ms (under cProfile)")
    s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25); print(s.getvalue()[-6000:])
llm.shutdown()
