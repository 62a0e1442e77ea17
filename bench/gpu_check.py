"""GPU correctness of the engine against transformers on a real-shape model with random weights.

One call does it all (the device lease is short). Qwen3-0.6B-shaped weights are made by transformers and
loaded into tokenmill; then
  * fp32: greedy tokens must equal transformers' `generate` (Triton kernels with IEEE dots, CUDA graphs);
  * bf16: tokenmill's logprobs (top 5 and the chosen token, every generated position) against
    transformers' teacher-forced log-softmax on the same tokens, through prefill, decode with CUDA-graph
    replay, eager decode, chunked prefill with prefix-cache hits, preemption, the PyTorch reference
    kernels, and the fp8 and int8 KV caches (greedy agreement and error vs bf16).
Usage: PYTHONPATH=. python bench/gpu_check.py [--out results.json]; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from tokenmill import LLM, SamplingParams
from tokenmill.models.presets import preset_config
from tokenmill.tokenizer import build_byte_level_tokenizer

SETUPS = {
    "graphs": {},
    "eager": {"enforce_eager": True},
    "chunked-prefill": {"max_num_batched_tokens": 64},
    "preemption": {"num_kv_blocks": 28, "max_num_batched_tokens": 256},
    "torch-kernels": {"kernels": "torch"},
    "fp8-kv": {"kv_cache_dtype": "fp8"},
    "int8-kv": {"kv_cache_dtype": "int8"},
}
BF16_MAX_ABS_LOGPROB_ERROR = 0.15  # bf16 rounding of 28 layers; a quantized KV cache gets 4x this


def prompts(seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [1, 5, 17, 48, 100, 160, 300, 33]
    out = [[rng.randrange(0, 255) for _ in range(n)] for n in lengths]
    return [*out, [*out[6][:200], 1, 2, 3], [*out[6][:200], 7]]  # shared prefixes: cache hits


def save_model(directory: Path, dtype: torch.dtype) -> None:
    config = dict(preset_config("qwen3-0.6b"))
    config.pop("architectures")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**config), dtype=dtype)
    model.save_pretrained(directory)
    build_byte_level_tokenizer().save_pretrained(directory)


def hf_model(directory: Path, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).cuda().eval()


def check_fp32(directory: Path, report: dict) -> bool:
    batch = prompts()
    model = hf_model(directory, torch.float32)
    expected = []
    with torch.no_grad():
        for prompt in batch:
            ids = torch.tensor([prompt], device="cuda")
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, pad_token_id=0
            )
            expected.append(out[0, len(prompt) :].tolist())
    del model
    ok = True
    for name in ("graphs", "preemption"):
        llm = LLM(str(directory), device="cuda", dtype="float32", **SETUPS[name])
        outs = llm.generate(
            batch, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True), use_tqdm=False
        )
        exact = sum(o.outputs[0].token_ids == e for o, e in zip(outs, expected))
        report[f"fp32_{name}_exact_sequences"] = f"{exact}/{len(batch)}"
        ok &= exact == len(batch)
        del llm
        torch.cuda.empty_cache()
    return ok


def check_bf16(directory: Path, report: dict) -> bool:
    batch = prompts()
    reference = hf_model(directory, torch.bfloat16)
    ok = True
    for name, setup in SETUPS.items():
        llm = LLM(str(directory), device="cuda", dtype="bfloat16", **setup)
        params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=5)
        llm.generate(batch[6:7], params, use_tqdm=False)  # fills the prefix cache for the shared prompts
        outs = llm.generate(batch, params, use_tqdm=False)
        errors, relative, agree, positions = [], [], 0, 0
        with torch.no_grad():
            for out in outs:
                completion = out.outputs[0]
                ids = torch.tensor([out.prompt_token_ids + completion.token_ids], device="cuda")
                logits = reference(ids).logits[0, len(out.prompt_token_ids) - 1 : -1].float().log_softmax(-1)
                for step, entry in enumerate(completion.logprobs):
                    for token, value in entry.items():
                        expected = logits[step, token].item()
                        errors.append(abs(value - expected))
                        relative.append(abs(value - expected) / max(abs(expected), 1e-6))
                    agree += int(logits[step].argmax().item() == completion.token_ids[step])
                    positions += 1
        worst = max(errors)
        report[f"bf16_{name}"] = {
            "max_abs_logprob_err": round(worst, 4),
            "mean_abs_logprob_err": round(sum(errors) / len(errors), 5),
            "mean_rel_logprob_err": round(sum(relative) / len(relative), 5),
            "greedy_agreement": round(agree / positions, 4),
            "cached_prompt_tokens": sum(o.num_cached_tokens for o in outs),
            "preemptions": llm.engine.scheduler.num_preemptions,
            "cuda_graphs": len(llm.engine.runner.graphs),
        }
        limit = BF16_MAX_ABS_LOGPROB_ERROR * (4 if name.endswith("-kv") else 1)
        ok &= worst < limit
        ok &= name != "preemption" or llm.engine.scheduler.num_preemptions > 0
        del llm
        torch.cuda.empty_cache()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    passed = True
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, bf16_dir = Path(tmp) / "fp32", Path(tmp) / "bf16"
        save_model(fp32_dir, torch.float32)
        save_model(bf16_dir, torch.bfloat16)
        for check, directory in ((check_fp32, fp32_dir), (check_bf16, bf16_dir)):
            started = time.perf_counter()
            ok = check(directory, report)
            report[f"{check.__name__}_passed"] = ok
            passed &= ok
            print(
                f"{check.__name__}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - started:.1f}s",
                flush=True,
            )
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
