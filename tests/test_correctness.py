"""Greedy decoding is token-exact with transformers' `generate`, whatever the scheduler does meanwhile."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers.tiny_models import ARCHITECTURES
from tokenmill import LLM, SamplingParams
from tokenmill.engine.async_scheduler import AsyncScheduler
from tokenmill.engine.scheduler import Scheduler

pytestmark = pytest.mark.slow  # transformers references and engines on every architecture

MAX_TOKENS = 24


def mixed_prompts(seed: int = 1) -> list[list[int]]:
    """Random token prompts of 1 to 130 tokens; two share a 40-token prefix, two share a 33-token one."""
    rng = random.Random(seed)
    lengths = [1, 2, 7, 16, 17, 31, 64, 100, 130]
    prompts = [[rng.randrange(3, 256) for _ in range(n)] for n in lengths]
    shared = prompts[7][:40]
    prompts += [[*shared, 5, 6, 7], [*shared, 9], prompts[8][:33] + [11] * 20]
    return prompts


def hf_greedy(model_dir, prompts: list[list[int]]) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                pad_token_id=0,
            )
            outputs.append(out[0, len(prompt) :].tolist())
    return outputs


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    cache: dict[str, list[list[int]]] = {}

    def get(arch: str) -> list[list[int]]:
        if arch not in cache:
            cache[arch] = hf_greedy(tiny_model_dir(arch), mixed_prompts())
        return cache[arch]

    return get


ENGINE_SETUPS = {
    "plain": dict(block_size=16),
    "chunked-prefill": dict(max_num_batched_tokens=24, block_size=5),
    "preemption": dict(num_kv_blocks=24, block_size=8, max_num_batched_tokens=64),
    "no-prefix-cache": dict(enable_prefix_caching=False, block_size=3, max_num_seqs=4),
}


@pytest.mark.parametrize("setup", sorted(ENGINE_SETUPS))
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_matches_transformers(arch: str, setup: str, tiny_model_dir, reference) -> None:
    llm = LLM(str(tiny_model_dir(arch)), device="cpu", **ENGINE_SETUPS[setup])
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    outputs = llm.generate(mixed_prompts(), params, use_tqdm=False)
    got = [o.outputs[0].token_ids for o in outputs]
    assert got == reference(arch)
    assert all(o.outputs[0].finish_reason == "length" for o in outputs)
    if setup == "preemption":
        assert llm.engine.scheduler.num_preemptions > 0
    assert llm.engine.block_manager.usage == 0.0


def test_prefix_cache_hits_and_stays_exact(tiny_model_dir, reference) -> None:
    """A second pass over the same prompts is served mostly from cached blocks and gives the same tokens."""
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", block_size=4)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    first = llm.generate(mixed_prompts(), params, use_tqdm=False)
    second = llm.generate(mixed_prompts(), params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in second] == reference("qwen3")
    assert sum(o.num_cached_tokens for o in second) > sum(o.num_cached_tokens for o in first)
    long_prompt = second[8]
    assert long_prompt.num_cached_tokens == (len(long_prompt.prompt_token_ids) - 1) // 4 * 4


def test_bf16_runs_close_to_fp32(tiny_model_dir) -> None:
    """bf16 on CPU runs the same code path; its first greedy tokens agree with fp32 on most prompts."""
    prompts = mixed_prompts()
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    fp32 = LLM(str(tiny_model_dir("llama")), device="cpu").generate(prompts, params, use_tqdm=False)
    bf16 = LLM(str(tiny_model_dir("llama")), device="cpu", dtype="bfloat16").generate(
        prompts, params, use_tqdm=False
    )
    agree = sum(a.outputs[0].token_ids[0] == b.outputs[0].token_ids[0] for a, b in zip(fp32, bf16))
    assert agree >= len(prompts) - 2


def test_async_scheduling_changes_nothing_but_overlap(default_llm, monkeypatch) -> None:
    """Steps launched ahead on the device's own tokens give exactly the synchronous results, with EOS,
    stop strings, different lengths and a request whose min_tokens holds speculation off."""
    engine = default_llm.engine
    questions = ["What is the capital of France?", "Name three colors.", "Count from one to ten.", "Say hi."]
    conversations = [[{"role": "user", "content": q}] for q in questions]
    params = [
        SamplingParams(temperature=0, max_tokens=40),
        SamplingParams(temperature=0, max_tokens=7),
        SamplingParams(temperature=0, max_tokens=60, stop=["five", "5"]),
        SamplingParams(temperature=0, max_tokens=30, min_tokens=12),
    ]
    assert isinstance(engine.scheduler, AsyncScheduler)
    before = engine.stats.continued_steps
    asynchronous = default_llm.chat(conversations, params, use_tqdm=False)
    after = engine.stats.continued_steps
    assert after > before
    policy = engine.scheduler  # idle between calls: swap in the synchronous policy with the same limits
    synchronous_policy = Scheduler(
        engine.block_manager, policy.max_num_seqs, policy.max_num_batched_tokens, policy.max_model_len
    )
    monkeypatch.setattr(engine, "scheduler", synchronous_policy)
    synchronous = default_llm.chat(conversations, params, use_tqdm=False)
    assert engine.stats.continued_steps == after
    for a, s in zip(asynchronous, synchronous):
        assert (a.outputs[0].text, a.outputs[0].token_ids, a.outputs[0].finish_reason) == (
            s.outputs[0].text,
            s.outputs[0].token_ids,
            s.outputs[0].finish_reason,
        )
    assert asynchronous[2].outputs[0].finish_reason == "stop"
    assert len(asynchronous[3].outputs[0].token_ids) >= 12
    assert engine.block_manager.usage == 0.0
