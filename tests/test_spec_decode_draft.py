"""Draft-model speculation end to end on CPU: greedy output identical to decoding without speculation
(a draft of another architecture and seed, through chunked prefill and preemption), every proposal
accepted when the draft has the target's weights, the draft's own KV blocks all free afterwards, and
clear errors for a missing or incompatible draft."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from tests.helpers.tiny_models import save_tiny_model, tiny_config
from tests.test_spec_decode_engine import copy_heavy_prompts, generate, summary
from tokenmill import LLM, SamplingParams
from tokenmill.config import EngineConfig
from tokenmill.spec_decode.draft_model import DraftModelProposer
from tokenmill.tokenizer import build_byte_level_tokenizer

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def draft_blocks_in_use(engine) -> float:
    proposer = engine.speculator.proposer
    assert isinstance(proposer, DraftModelProposer)
    return proposer.block_manager.usage


@pytest.mark.slow
def test_a_draft_with_the_targets_weights_has_every_proposal_accepted(tiny_model_dir) -> None:
    model = tiny_model_dir("qwen3")
    prompts = copy_heavy_prompts()[:3]
    plain, _ = generate(model, prompts, GREEDY)
    spec, engine = generate(model, prompts, GREEDY, "draft", speculative_model=str(model))
    assert summary(spec) == summary(plain)
    stats = engine.stats
    assert stats.spec_proposed_tokens > 0
    assert stats.spec_acceptance_rate == 1.0
    assert draft_blocks_in_use(engine) == 0


@pytest.mark.slow
def test_another_draft_keeps_greedy_output_through_chunked_prefill_and_preemption(
    tiny_model_dir, tmp_path
) -> None:
    """A llama draft of another seed for a qwen3 target: mostly rejected, and so rolled back on both
    sides every step; 40 blocks of 4 tokens make the target preempt, 32-token steps chunk prefills."""
    target = tiny_model_dir("qwen3")
    draft = save_tiny_model("llama", tmp_path / "draft", seed=1)
    prompts = copy_heavy_prompts()
    args = dict(num_kv_blocks=40, max_num_batched_tokens=32, num_speculative_tokens=3)
    plain, _ = generate(target, prompts, GREEDY, **args)
    spec, engine = generate(target, prompts, GREEDY, "draft", speculative_model=str(draft), **args)
    assert summary(spec) == summary(plain)
    assert engine.scheduler.num_preemptions > 0
    assert engine.stats.spec_proposed_tokens > engine.stats.spec_accepted_tokens
    assert draft_blocks_in_use(engine) == 0


def test_draft_needs_a_model_and_the_targets_vocabulary(tiny_model_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="speculative_model"):
        EngineConfig(speculative_method="draft")
    with pytest.raises(ValueError, match="speculative_model"):
        EngineConfig(speculative_method="ngram", speculative_model="random:qwen3-0.6b")
    config = tiny_config("qwen3")
    config.vocab_size = 400
    other_vocabulary = tmp_path / "other"
    AutoModelForCausalLM.from_config(config).save_pretrained(other_vocabulary)
    build_byte_level_tokenizer().save_pretrained(other_vocabulary)
    with pytest.raises(ValueError, match=r"speculative_model: .* 400 tokens, the target 320"):
        LLM(
            str(tiny_model_dir("qwen3")),
            device="cpu",
            speculative_method="draft",
            speculative_model=str(other_vocabulary),
        )
