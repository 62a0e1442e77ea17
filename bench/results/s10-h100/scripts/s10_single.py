"""Session 10: Qwen3-8B single-stream decode (128 in, 256 out): bf16, and fp8 / awq with the tree's GEMV shapes and
with the sweep's best (monkeypatched before the engine captures its graphs). tok/s of two timed runs after a warm one."""
import json, sys, time
sys.path.insert(0, ".k4")
import torch
from tokenmill import LLM, SamplingParams
import s10_gemv_setters as S

best = json.load(open(sys.argv[1]))
res = {}
for quant, fmt, setter in ((None, "bf16", None), ("fp8", "fp8-channel", S.set_byte), ("awq", "awq", S.set_int4)):
    for v in (["tree"] if setter is None else ["tree", best[fmt]]):
        if setter:
            setter(v)
        llm = LLM("random:qwen3-8b", quantization=quant, max_num_seqs=4, max_model_len=1024)
        params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
        prompt = {"prompt_token_ids": list(range(1000, 1128))}
        rates = []
        for rep in range(3):
            torch.cuda.synchronize(); t = time.perf_counter()
            llm.generate([prompt["prompt_token_ids"]], params, use_tqdm=False)
            torch.cuda.synchronize(); dt = time.perf_counter() - t
            if rep:
                rates.append(256 / dt)
        llm.shutdown()
        S.reset()
        res[f"{fmt}/{v}"] = rates
        print(f"{fmt:12s} {v:16s} " + " ".join(f"{r:.1f}" for r in rates) + " tok/s", flush=True)
        del llm; torch.cuda.empty_cache()
json.dump(res, open(sys.argv[2], "w"), indent=1)
