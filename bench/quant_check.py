"""Each quantization against bf16 on a real-shape model with random weights, on a GPU, in one call.

Loads `random:<preset>` in bf16 (fp32 on CPU) and again with each `--quantization` (same seed, so the
same draws), decodes the same prompts greedily through the real engine (Triton kernels, CUDA graphs) and
reports weight bytes, greedy agreement before the first divergence, and teacher-forced figures: every
position of the unquantized model's greedy continuation is scored again, as a one-token request on the
prompt plus the reference tokens before it (prefix-cached), by every format including the unquantized
one (so both sides run the same path). Random weights put the top logits close together, so a format's
first greedy divergence comes early and says little; teacher-forced, each position counts: the share
whose argmax equals the reference's (`top1_agreement`) and the mean |logprob| difference of the
reference's argmax token (`logprob_mean_abs`, over the positions where that token is among the format's
top 20: `logprob_positions`).
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


def run(
    model: str,
    quantization: str | None,
    prompts: list[list[int]],
    max_tokens: int,
    forced: list[list[int]] | None,
) -> dict:
    """Greedy outputs of `prompts`, and (with `forced`) each forced prompt's next-token logprobs."""
    started = time.perf_counter()
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    llm = LLM(model=model, dtype=dtype, quantization=quantization, max_model_len=512)
    loaded = time.perf_counter() - started
    params = SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=0, ignore_eos=True)
    llm.generate(prompts[:2], params)  # warm
    started = time.perf_counter()
    outputs = [o.outputs[0] for o in llm.generate(prompts, params)]
    seconds = time.perf_counter() - started
    scored = None
    if forced is not None:
        one = SamplingParams(temperature=0, max_tokens=1, logprobs=TOP, ignore_eos=True)
        scored = [o.outputs[0].logprobs[0] for o in llm.generate(forced, one)]
    result = {"weight_bytes": weight_bytes(llm), "load_s": loaded, "generate_s": seconds}
    result.update(outputs=outputs, scored=scored)
    del llm
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


TOP = 20  # alternatives returned per teacher-forced position


def teacher_forced_prompts(prompts: list[list[int]], reference: list) -> list[list[int]]:
    """The prompt plus the first i reference tokens, for every position i of every continuation."""
    return [p + list(r.token_ids[:i]) for p, r in zip(prompts, reference) for i in range(len(r.token_ids))]


def forced_distance(reference: list[dict[int, float]], scored: list[dict[int, float]]) -> dict:
    same, errors = 0, []
    for ref, got in zip(reference, scored):
        token = max(ref, key=ref.get)
        same += max(got, key=got.get) == token
        if token in got:
            errors.append(abs(ref[token] - got[token]))
    return {
        "top1_agreement": same / len(reference),
        "logprob_mean_abs": sum(errors) / max(len(errors), 1),
        "logprob_max_abs": max(errors, default=0.0),
        "logprob_positions": f"{len(errors)}/{len(reference)}",
    }


def distance(reference: list, outputs: list) -> dict:
    same, total, errors = 0, 0, []
    for ref, out in zip(reference, outputs):
        total += len(ref.token_ids)
        for i, (a, b) in enumerate(zip(ref.token_ids, out.token_ids)):
            if a != b:
                break
            same += 1
            errors.append(abs(ref.logprobs[i][a] - out.logprobs[i][b]))
    return {"greedy_agreement_to_divergence": same / total}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--formats", default="int8,fp8,awq", help="comma-separated --quantization values")
    parser.add_argument("--out")
    args = parser.parse_args()
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 250) for _ in range(n)] for n in (5, 40, 120, 300)]
    reference = run(args.model, None, prompts, args.max_tokens, None)["outputs"]
    forced = teacher_forced_prompts(prompts, reference)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"model": args.model, "device": device, "formats": {}}
    baseline = None
    for quantization in (None, *args.formats.split(",")):
        result = run(args.model, quantization, prompts, args.max_tokens, forced)
        outputs, scored = result.pop("outputs"), result.pop("scored")
        baseline = baseline or scored
        result |= distance(reference, outputs) | forced_distance(baseline, scored)
        report["formats"][quantization or "unquantized"] = result
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
