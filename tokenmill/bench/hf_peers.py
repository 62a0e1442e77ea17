"""The offline benchmark's peers: transformers running the same requests on the same device.

They give a run's throughput something outside tokenmill to stand beside: `hf` is one static batch
through `generate`, `hf-cb` transformers' own continuous batching. The model is built from the same
config with random weights, so only the speed is compared, not the text.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch


def peer_throughputs(
    peers: list[str], model_ref: str, requests: list[tuple[list[int], int]], device: torch.device
) -> dict[str, float | str | None]:
    """Output tokens per second of each named peer ("hf", "hf-cb") on `requests`, keyed as the result
    reports them; a peer that fails gets its error instead."""
    output_tokens = sum(out for _, out in requests)
    results: dict[str, float | str | None] = {}
    for peer in peers:
        key = {"hf": "hf_static_tokens_per_s", "hf-cb": "hf_cb_tokens_per_s"}[peer]
        try:
            results[key] = round(output_tokens / run_hf(model_ref, requests, device, peer == "hf-cb"), 1)
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            results[key] = f"failed: {type(exc).__name__}: {exc}"[:300]
    return results


def run_hf(
    model_ref: str, requests: list[tuple[list[int], int]], device: torch.device, continuous: bool
) -> float:
    """Seconds transformers takes for the same requests: static batching with `generate` (one batch,
    left-padded, run to the longest output), or continuous batching with `generate_batch`."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_config(_hf_config(model_ref), dtype=torch.bfloat16)
    model = model.to(device).eval()
    longest = max(out for _, out in requests)
    with torch.no_grad():  # not inference_mode: transformers' continuous batching updates tensors in place
        if continuous:
            model.set_attn_implementation("paged|sdpa")
            config = GenerationConfig(
                max_new_tokens=longest, do_sample=False, eos_token_id=-1, pad_token_id=0
            )
            started = time.perf_counter()
            results = model.generate_batch(inputs=[p for p, _ in requests], generation_config=config)
            produced = sum(len(r.generated_tokens) for r in results.values())
            if len(results) != len(requests) or produced < sum(out for _, out in requests):
                raise RuntimeError(f"generate_batch returned {len(results)} results, {produced} tokens")
        else:
            width = max(len(p) for p, _ in requests)
            ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in requests], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in requests], device=device)
            started = time.perf_counter()
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=0,
            )
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return elapsed


def _hf_config(model_ref: str) -> Any:
    from transformers import AutoConfig

    from tokenmill.models.presets import preset_config

    if model_ref.startswith("random:"):
        raw = dict(preset_config(model_ref.removeprefix("random:")))
        architecture = raw.pop("architectures")[0]
        model_type = {"Qwen3ForCausalLM": "qwen3", "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
        return AutoConfig.for_model(model_type[architecture], **raw)
    return AutoConfig.from_pretrained(model_ref)
