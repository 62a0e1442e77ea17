"""Greedy speculative decoding in half precision is self-consistent: a verified token rounds as its decode
step would whichever proposals its step verifies (the attention runs each token as a decode; the fused
GEMVs are per-row invariant for 2 to 8 rows), so runs at different acceptance rates compute bit-identical
logits at every position and emit the same text, which is also the text recorded through full verify steps
that bench replays are drawn from."""

from __future__ import annotations

import pytest
import torch

from tests.test_spec_decode_engine import copy_heavy_prompts, generate, summary
from tokenmill import SamplingParams
from tokenmill.bench.replay_proposer import FillerProposer, ReplayProposer


class VerifyLogits:
    """Records the logits of every verify step of a one-sequence run, with the positions and input
    tokens of the step's chunk."""

    def __init__(self) -> None:
        self.steps: list[tuple[list[int], list[int], list[int], torch.Tensor]] = []

    def install(self, engine) -> None:
        run_model = engine.runner.run_model

        def recording(inputs, use_graph: bool):
            logits = run_model(inputs, use_graph)
            if logits is not None and len(logits) > 1:
                step = inputs.positions.tolist(), inputs.input_ids.tolist(), inputs.logits_indices.tolist()
                self.steps.append((*step, logits.clone()))
            return logits

        engine.runner.run_model = recording

    def by_position(self, tokens: list[int]) -> dict[int, torch.Tensor]:
        """The logits each position's token got from a row whose inputs up to it are all `tokens` (the
        final text: rows after a rejected proposal saw wrong tokens and are left out)."""
        valid = {}
        for positions, input_ids, rows, logits in self.steps:
            for row, index in enumerate(rows):
                if all(tokens[p] == t for p, t in zip(positions[: index + 1], input_ids)):
                    valid.setdefault(positions[index], []).append(logits[row])
        return valid


@pytest.mark.slow
def test_replays_at_any_acceptance_compute_the_recorded_logits_and_text(tiny_model_dir) -> None:
    model = tiny_model_dir("qwen3")
    prompts = copy_heavy_prompts()[:1]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    engine_args = dict(kernels="triton", dtype="float16", num_speculative_tokens=3)
    recorder = VerifyLogits()
    recorded, _ = generate(
        model, prompts, params, "ngram", FillerProposer(), before_generate=recorder.install, **engine_args
    )
    tokens = recorded[0].prompt_token_ids + recorded[0].outputs[0].token_ids
    logits = recorder.by_position(tokens)
    for acceptance in (0.3, 1.0):
        replay = VerifyLogits()
        proposer = ReplayProposer([tokens], acceptance, vocab_size=320)
        outputs, engine = generate(
            model, prompts, params, "ngram", proposer, before_generate=replay.install, **engine_args
        )
        assert summary(outputs) == summary(recorded)
        accepted, proposed = engine.stats.spec_accepted_tokens, engine.stats.spec_proposed_tokens
        assert (accepted == proposed) == (acceptance == 1.0)
        replayed = replay.by_position(tokens)
        common = logits.keys() & replayed.keys()
        assert len(common) > 10
        for position in common:
            for row in logits[position] + replayed[position]:
                assert torch.equal(row, logits[position][0]), f"position {position}, acceptance {acceptance}"
