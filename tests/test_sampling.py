"""Sampling settings do what they say, and bad ones are refused with the field named."""

from __future__ import annotations

import pytest

from tokenmill import LLM, SamplingParams

PROMPTS = [[10, 20, 30, 40], [99] * 9, list(range(40, 90))]


@pytest.fixture(scope="module")
def llm(tiny_model_dir) -> LLM:
    return LLM(str(tiny_model_dir("qwen3")), device="cpu", block_size=8)


def tokens(llm: LLM, prompts, params: SamplingParams) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def test_seeded_sampling_repeats_regardless_of_batch_mates(llm: LLM) -> None:
    seeded = SamplingParams(temperature=1.0, seed=7, max_tokens=16, ignore_eos=True)
    alone = tokens(llm, PROMPTS[:1], seeded)[0]
    unseeded = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)
    mixed = llm.generate(PROMPTS, [seeded, unseeded, unseeded], use_tqdm=False)
    assert mixed[0].outputs[0].token_ids == alone
    assert (
        tokens(llm, PROMPTS[:1], SamplingParams(temperature=1.0, seed=8, max_tokens=16, ignore_eos=True))[0]
        != alone
    )


def test_unseeded_sampling_varies(llm: LLM) -> None:
    params = SamplingParams(temperature=1.5, max_tokens=16, ignore_eos=True)
    assert tokens(llm, PROMPTS[:1], params) != tokens(llm, PROMPTS[:1], params)


def test_top_k_one_and_tiny_top_p_equal_greedy(llm: LLM) -> None:
    greedy = tokens(llm, PROMPTS, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    assert (
        tokens(llm, PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_tokens=12, ignore_eos=True))
        == greedy
    )
    assert (
        tokens(llm, PROMPTS, SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=12, ignore_eos=True))
        == greedy
    )
    assert (
        tokens(llm, PROMPTS, SamplingParams(temperature=1.0, min_p=1.0, max_tokens=12, ignore_eos=True))
        == greedy
    )


def test_top_k_restricts_choices(llm: LLM) -> None:
    """With top_k=3, every sampled token is among the 3 most likely (checked through logprobs)."""
    out = llm.generate(
        PROMPTS,
        SamplingParams(temperature=5.0, top_k=3, logprobs=3, max_tokens=10, ignore_eos=True, seed=1),
        use_tqdm=False,
    )
    for request in out:
        completion = request.outputs[0]
        assert completion.logprobs is not None
        for entry in completion.logprobs:
            assert len(entry) == 3  # the sampled token is one of the top 3, so no fourth key was added


@pytest.mark.parametrize(
    "penalty",
    [dict(repetition_penalty=2.0), dict(presence_penalty=2.0), dict(frequency_penalty=2.0)],
)
def test_penalties_change_greedy_output(llm: LLM, penalty: dict) -> None:
    base = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    penalized = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, **penalty)
    plain, changed = tokens(llm, PROMPTS, base), tokens(llm, PROMPTS, penalized)
    assert plain != changed
    if "repetition_penalty" in penalty or "presence_penalty" in penalty:
        repeats = lambda runs: sum(len(r) - len(set(r)) for r in runs)  # noqa: E731
        assert repeats(changed) < repeats(plain)


def test_max_tokens_and_stop_token_ids(llm: LLM) -> None:
    greedy = tokens(llm, PROMPTS[:1], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    stop_at = greedy[5]
    out = llm.generate(
        PROMPTS[:1],
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[stop_at]),
        use_tqdm=False,
    )[0].outputs[0]
    first = greedy.index(stop_at)
    assert out.token_ids == greedy[: first + 1]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop_at)
    length = llm.generate(
        PROMPTS[:1], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True), use_tqdm=False
    )
    assert length[0].outputs[0].finish_reason == "length" and len(length[0].outputs[0].token_ids) == 3


@pytest.mark.slow
def test_eos_stops_unless_ignored_and_min_tokens_holds_it_off(default_llm) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    short = default_llm.chat(messages, SamplingParams(temperature=0, max_tokens=40), use_tqdm=False)[
        0
    ].outputs[0]
    assert short.finish_reason == "stop" and len(short.token_ids) < 20
    held = default_llm.chat(
        messages, SamplingParams(temperature=0, max_tokens=40, min_tokens=25), use_tqdm=False
    )
    assert len(held[0].outputs[0].token_ids) >= 25
    ignored = default_llm.chat(
        messages, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True), use_tqdm=False
    )
    assert ignored[0].outputs[0].finish_reason == "length" and len(ignored[0].outputs[0].token_ids) == 30


@pytest.mark.slow
def test_stop_strings_are_trimmed(default_llm) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    full = (
        default_llm.chat(messages, SamplingParams(temperature=0, max_tokens=40), use_tqdm=False)[0]
        .outputs[0]
        .text
    )
    assert "France" in full
    out = default_llm.chat(
        messages, SamplingParams(temperature=0, max_tokens=40, stop=["France", "zzz"]), use_tqdm=False
    )
    completion = out[0].outputs[0]
    assert completion.text == full[: full.index("France")]
    assert (completion.finish_reason, completion.stop_reason) == ("stop", "France")


def test_n_samples(llm: LLM) -> None:
    out = llm.generate(
        PROMPTS[:1],
        SamplingParams(n=3, temperature=1.0, seed=3, max_tokens=8, ignore_eos=True),
        use_tqdm=False,
    )[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("n", 0),
        ("temperature", -0.1),
        ("temperature", "hot"),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -2),
        ("top_k", 2.5),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 3.0),
        ("frequency_penalty", -2.5),
        ("seed", 1.5),
        ("max_tokens", 0),
        ("min_tokens", -1),
        ("stop", [""]),
        ("stop", [3]),
        ("stop_token_ids", [-1]),
        ("logprobs", 21),
        ("max_tokens", True),
    ],
)
def test_bad_sampling_params_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_min_tokens_above_max_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=5, max_tokens=4)


def test_bad_prompts_are_refused(llm: LLM) -> None:
    with pytest.raises(ValueError, match="prompt"):
        llm.generate([[]], SamplingParams(), use_tqdm=False)
    with pytest.raises(ValueError, match="prompt"):
        llm.generate([[1] * 600], SamplingParams(), use_tqdm=False)
    with pytest.raises(ValueError, match="prompt 2: prompt token ids"):
        llm.generate([[5], [6], [10_000]], SamplingParams(), use_tqdm=False)
    assert not llm.engine.has_unfinished_requests()
