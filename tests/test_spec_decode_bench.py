"""The bench's copy workload and its speculation report: what the coordinator runs on a GPU."""

from __future__ import annotations

import pytest

from tokenmill.bench.copy_workload import INSTRUCTION, PARAGRAPH, CopyWorkload
from tokenmill.bench.offline import benchmark
from tokenmill.bench.replay_proposer import Replay
from tokenmill.config import EngineConfig
from tokenmill.tokenizer import Tokenizer


def test_copy_workload_asks_to_repeat_its_paragraph() -> None:
    tokenizer = Tokenizer.byte_level()  # one token per UTF-8 byte
    ((prompt, output_len),) = CopyWorkload("copy").requests(tokenizer)
    text = tokenizer.decode(prompt, skip_special_tokens=False)
    assert INSTRUCTION + PARAGRAPH in text and text.endswith("<|im_start|>assistant\n")
    assert output_len == len(PARAGRAPH.encode()) + 16


@pytest.mark.slow
def test_bench_reports_acceptance_and_the_same_greedy_output(tiny_model_dir) -> None:
    workload = CopyWorkload("copy", paragraph="one two three four. " * 4)
    results = {}
    for method in ("none", "ngram"):
        config = EngineConfig(
            model=str(tiny_model_dir("qwen3")), device="cpu", max_num_seqs=1, speculative_method=method
        )
        results[method] = benchmark(config, workload, [], "test", None)
    plain, spec = results["none"], results["ngram"]
    assert plain.speculation == {}
    assert spec.output_digest == plain.output_digest and spec.output_tokens == plain.output_tokens
    report = spec.speculation
    assert report["method"] == "ngram" and report["proposed_tokens"] > 0
    assert report["acceptance_rate"] == pytest.approx(
        report["accepted_tokens"] / report["proposed_tokens"], abs=1e-3
    )


@pytest.mark.slow
def test_a_replay_point_reaches_its_acceptance_and_emits_the_recorded_text(tiny_model_dir) -> None:
    """bench/spec_decode.py --replay-acceptance: the recording is a speculative pass, the replay proposes
    from it at the requested rate and emits exactly the recorded text."""
    workload = CopyWorkload("copy", paragraph="one two three four. " * 4)
    config = EngineConfig(
        model=str(tiny_model_dir("qwen3")),
        device="cpu",
        max_num_seqs=1,
        speculative_method="ngram",
        num_speculative_tokens=4,
        speculative_adaptive=False,
    )
    replay = Replay(0.6)
    result = benchmark(config, workload, [], "test", None, prepare=replay)
    assert result.output_digest == replay.recording
    # a draft stops at its first wrong token: accepted / proposed is 0.6 (1 + 0.6 + 0.6² + 0.6³) / 4
    assert result.speculation["acceptance_rate"] == pytest.approx(replay.expected_rate(4), abs=0.1)
