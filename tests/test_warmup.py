"""The start-up warm-up's step-shape ladder: the sizes it runs, and that it touches only scratch memory."""

from __future__ import annotations

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.engine.warmup import token_count_ladder, warm_up_step_shapes


def test_ladder_has_each_power_of_two_a_midpoint_and_the_largest() -> None:
    assert token_count_ladder(1) == [1]
    assert token_count_ladder(8192)[:9] == [1, 2, 3, 4, 6, 8, 12, 16, 24]
    assert token_count_ladder(8192)[-3:] == [4096, 6144, 8192]
    assert token_count_ladder(300)[-3:] == [192, 256, 300]


def test_warm_up_writes_only_the_scratch_block_and_changes_no_answer(tiny_model_dir) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", max_num_seqs=4, enable_prefix_caching=False)
    greedy = SamplingParams(temperature=0, max_tokens=6)
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13]]
    before = [o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]
    runner = llm.engine.runner
    live = [cache[:, : runner.null_block].clone() for cache in runner.kv_caches]
    warm_up_step_shapes(runner, max_num_batched_tokens=300, max_num_seqs=4)
    for cache, kept in zip(runner.kv_caches, live):
        assert torch.equal(cache[:, : runner.null_block], kept)
    assert runner.kv_caches[0][:, runner.null_block].abs().sum() > 0  # the ladder did run through it
    after = [o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]
    assert after == before
