"""GPU correctness of the engine against transformers on a real-shape model with random weights.

One call does it all (the device lease is short): build Qwen3-0.6B-shaped weights with transformers,
load them into tokenmill, and compare
  * fp32: greedy tokens must equal transformers' `generate` exactly;
  * bf16: tokenmill's logprobs against transformers' teacher-forced logits on the same tokens,
through prefill, decode, prefix-cache hits, chunked prefill and preemption. Also times a judge-shaped
batch so later speed work has a baseline. Usage: PYTHONPATH=. python bench/gpu_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from tokenmill import LLM, SamplingParams
from tokenmill.models.presets import preset_config
from tokenmill.tokenizer import build_byte_level_tokenizer

SETUPS = {
    "plain": {},
    "chunked-prefill": {"max_num_batched_tokens": 64, "block_size": 16},
    "preemption": {"num_kv_blocks": 40, "block_size": 16, "max_num_batched_tokens": 256},
}


def prompts(seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [1, 5, 17, 48, 100, 160, 300, 33]
    out = [[rng.randrange(0, 255) for _ in range(n)] for n in lengths]
    out += [[*out[6][:200], 1, 2, 3], [*out[6][:200], 7]]  # shared prefixes: cache hits
    return out


def save_model(directory: Path, dtype: torch.dtype) -> None:
    config = dict(preset_config("qwen3-0.6b"))
    config.pop("architectures")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**config), dtype=dtype)
    model.save_pretrained(directory)
    build_byte_level_tokenizer().save_pretrained(directory)


def hf_generate(
    directory: Path, dtype: torch.dtype, batch: list[list[int]], max_tokens: int
) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).cuda().eval()
    results = []
    with torch.no_grad():
        for prompt in batch:
            ids = torch.tensor([prompt], device="cuda")
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=0,
            )
            results.append(out[0, len(prompt) :].tolist())
    del model
    torch.cuda.empty_cache()
    return results


def hf_teacher_forced(directory: Path, dtype: torch.dtype, rows: list[tuple[list[int], list[int]]]):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).cuda().eval()
    logprobs = []
    with torch.no_grad():
        for prompt, completion in rows:
            ids = torch.tensor([prompt + completion], device="cuda")
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
            logprobs.append(logits.log_softmax(-1))
    del model
    torch.cuda.empty_cache()
    return logprobs


def check_fp32(directory: Path, report: dict) -> None:
    batch = prompts()
    expected = hf_generate(directory, torch.float32, batch, 24)
    for name, setup in SETUPS.items():
        llm = LLM(str(directory), device="cuda", dtype="float32", **setup)
        outs = llm.generate(
            batch, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True), use_tqdm=False
        )
        got = [o.outputs[0].token_ids for o in outs]
        exact = sum(g == e for g, e in zip(got, expected))
        report[f"fp32_{name}_exact"] = f"{exact}/{len(batch)}"
        report[f"fp32_{name}_preemptions"] = llm.engine.scheduler.num_preemptions
        del llm
        torch.cuda.empty_cache()


def check_bf16(directory: Path, report: dict) -> None:
    batch = prompts()
    for name, setup in SETUPS.items():
        llm = LLM(str(directory), device="cuda", dtype="bfloat16", **setup)
        params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=0)
        llm.generate(batch[6:7], params, use_tqdm=False)  # warm the prefix cache for the second pass
        outs = llm.generate(batch, params, use_tqdm=False)
        rows = [(o.prompt_token_ids, o.outputs[0].token_ids) for o in outs]
        reference = hf_teacher_forced(directory, torch.bfloat16, rows)
        worst, total, agree, count = 0.0, 0.0, 0, 0
        for out, ref in zip(outs, reference):
            completion = out.outputs[0]
            for step, (token, entry) in enumerate(zip(completion.token_ids, completion.logprobs)):
                diff = abs(entry[token] - ref[step, token].item())
                worst, total, count = max(worst, diff), total + diff, count + 1
                agree += int(ref[step].argmax().item() == token)
        report[f"bf16_{name}_max_abs_logprob_err"] = round(worst, 5)
        report[f"bf16_{name}_mean_abs_logprob_err"] = round(total / count, 6)
        report[f"bf16_{name}_argmax_agreement"] = round(agree / count, 4)
        report[f"bf16_{name}_cached_prompt_tokens"] = sum(o.num_cached_tokens for o in outs)
        del llm
        torch.cuda.empty_cache()


def time_judge_shape(directory: Path, report: dict) -> None:
    rng = random.Random(0)
    batch = [[rng.randrange(0, 255) for _ in range(rng.randint(48, 160))] for _ in range(358)]
    llm = LLM(str(directory), device="cuda", dtype="bfloat16", max_num_seqs=358)
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    llm.generate(batch[:8], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    torch.cuda.synchronize()
    started = time.perf_counter()
    outs = llm.generate(batch, params, use_tqdm=False)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    report["qa358_reference_attention_output_tokens_per_s"] = round(tokens / elapsed, 1)
    report["qa358_reference_attention_wall_s"] = round(elapsed, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, bf16_dir = Path(tmp) / "fp32", Path(tmp) / "bf16"
        save_model(fp32_dir, torch.float32)
        save_model(bf16_dir, torch.bfloat16)
        for step in (check_fp32, check_bf16, time_judge_shape):
            started = time.perf_counter()
            step(fp32_dir if step is check_fp32 else bf16_dir, report)
            print(f"{step.__name__}: {time.perf_counter() - started:.1f}s", flush=True)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
