"""The embedded default model (SmolLM2-135M-Instruct) with n-gram speculation on a copy-heavy prompt: the
same greedy answer as without it, most of it accepted from the prompt, in fewer steps."""

from __future__ import annotations

import time

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.bench.copy_workload import CopyWorkload
from tokenmill.engine.stats import StepStats

pytestmark = pytest.mark.slow  # the real default model's weights, decoded twice


def test_ngram_on_a_copy_heavy_prompt_is_exact_and_mostly_accepted() -> None:
    results = {}
    for method in ("none", "ngram"):
        # k fixed at 4: the adaptive policy follows measured step times, which a shared CPU's load skews
        llm = LLM(device="cpu", max_num_seqs=1, speculative_method=method, speculative_adaptive=False)
        ((prompt, _),) = CopyWorkload("copy").requests(llm.tokenizer)
        params = SamplingParams(temperature=0, max_tokens=96)
        llm.generate([prompt[:8]], SamplingParams(max_tokens=2), use_tqdm=False)  # warm up
        llm.engine.stats = StepStats()
        started = time.perf_counter()
        output = llm.generate([prompt], params, use_tqdm=False)[0].outputs[0]
        results[method] = (output, time.perf_counter() - started, llm.engine.stats)
    (plain, plain_s, plain_stats), (spec, spec_s, stats) = results["none"], results["ngram"]
    assert spec.token_ids == plain.token_ids and spec.text == plain.text
    assert "scheduler decides every step" in plain.text  # the model does copy the paragraph
    print(
        f"\ndefault model, copy prompt, {len(plain.token_ids)} tokens: acceptance "
        f"{stats.spec_acceptance_rate:.2f}, {stats.spec_mean_accepted_length:.2f} accepted per verify, "
        f"steps {plain_stats.steps} -> {stats.steps}, {plain_s:.1f}s -> {spec_s:.1f}s "
        f"(x{plain_s / spec_s:.2f})"
    )
    assert stats.spec_acceptance_rate > 0.5
    assert stats.steps < 0.6 * plain_stats.steps
