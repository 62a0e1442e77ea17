"""Each quantization against bf16 on a real-shape model with random weights, on a GPU, in one call.

Loads `random:<preset>` in bf16 (fp32 on CPU) and again with each `--quantization` (same seed, so the
same draws), decodes the same prompts greedily through the real engine (Triton kernels, CUDA graphs) and
reports weight bytes, greedy agreement before the first divergence and the mean |logprob difference| of
the agreed tokens.
Usage: PYTHONPATH=. python bench/quant_check.py [--model random:qwen3-0.6b] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from tokenmill import LLM, SamplingParams


def weight_bytes(llm: LLM) -> int:
    model = llm.engine.runner.model
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run(model: str, quantization: str | None, prompts: list[list[int]], max_tokens: int) -> dict:
    started = time.perf_counter()
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    llm = LLM(model=model, dtype=dtype, quantization=quantization, max_model_len=512)
    loaded = time.perf_counter() - started
    params = SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=0, ignore_eos=True)
    llm.generate(prompts[:2], params)  # warm
    started = time.perf_counter()
    outputs = [o.outputs[0] for o in llm.generate(prompts, params)]
    seconds = time.perf_counter() - started
    result = {"weight_bytes": weight_bytes(llm), "load_s": loaded, "generate_s": seconds, "outputs": outputs}
    del llm
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def distance(reference: list, outputs: list) -> dict:
    same, total, errors = 0, 0, []
    for ref, out in zip(reference, outputs):
        total += len(ref.token_ids)
        for i, (a, b) in enumerate(zip(ref.token_ids, out.token_ids)):
            if a != b:
                break
            same += 1
            errors.append(abs(ref.logprobs[i][a] - out.logprobs[i][b]))
    return {"agreement": same / total, "logprob_mean_abs": sum(errors) / max(len(errors), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--formats", default="int8,fp8,awq", help="comma-separated --quantization values")
    parser.add_argument("--out")
    args = parser.parse_args()
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 250) for _ in range(n)] for n in (5, 40, 120, 300)]
    base = run(args.model, None, prompts, args.max_tokens)
    reference = base["outputs"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"model": args.model, "device": device, "formats": {}}
    for quantization in (None, *args.formats.split(",")):
        result = base if quantization is None else run(args.model, quantization, prompts, args.max_tokens)
        outputs = result.pop("outputs")
        report["formats"][quantization or "unquantized"] = {**result, **distance(reference, outputs)}
        print(
            quantization or "unquantized",
            json.dumps(report["formats"][quantization or "unquantized"]),
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
