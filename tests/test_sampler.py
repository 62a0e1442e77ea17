"""The sampler on hand-written logits, no model loaded: exact logprob entries and token choices."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmill.engine.sampler import Sampler
from tokenmill.engine.sequence import Sequence, SequenceStatus
from tokenmill.sampling_params import SamplingParams

EOS = 4


def make_seq(**params: object) -> Sequence:
    return Sequence("r", 0, [1, 2, 3], SamplingParams(**params), torch.device("cpu"))


def log_softmax(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(x) for x in row))
    return [x - total for x in row]


@pytest.fixture
def sampler() -> Sampler:
    return Sampler(torch.device("cpu"), seed=0, eos_token_ids=(EOS,))


LOGITS = [[0.0, 2.0, 1.0, -1.0, 0.5], [3.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 1.0, 0.0]]


def test_logprobs_hold_the_top_n_and_the_sampled_token(sampler: Sampler) -> None:
    top_two, none, only_sampled = make_seq(logprobs=2), make_seq(), make_seq(logprobs=0)
    seqs = [top_two, none, only_sampled]
    sampled = torch.tensor([3, 0, 2])  # row 0 drew an unlikely token
    sampler.record_logprobs(torch.tensor(LOGITS), sampled, seqs)
    row0, row2 = log_softmax(LOGITS[0]), log_softmax(LOGITS[2])
    assert top_two.logprobs == [
        {1: pytest.approx(row0[1]), 2: pytest.approx(row0[2]), 3: pytest.approx(row0[3])}
    ]
    assert list(top_two.logprobs[0]) == [1, 2, 3]  # most likely first, the sampled token last
    assert none.logprobs is None
    assert only_sampled.logprobs == [{2: pytest.approx(row2[2])}]


def test_logprobs_skip_finished_sequences(sampler: Sampler) -> None:
    live, finished = make_seq(logprobs=1), make_seq(logprobs=1)
    finished.status = SequenceStatus.FINISHED
    sampler.record_logprobs(torch.tensor(LOGITS[:2]), torch.tensor([1, 0]), [live, finished])
    assert live.logprobs == [{1: pytest.approx(log_softmax(LOGITS[0])[1])}]
    assert finished.logprobs == []


def test_greedy_takes_the_argmax_and_min_tokens_bans_eos(sampler: Sampler) -> None:
    logits = torch.tensor([[0.0, 1.0, 0.0, 0.0, 9.0], [0.0, 1.0, 0.0, 0.0, 9.0], [0.0, 1.0, 0.0, 0.0, 9.0]])
    plain = make_seq(temperature=0)
    held = make_seq(temperature=0, min_tokens=2)
    stop_held = make_seq(temperature=0, min_tokens=2, ignore_eos=True, stop_token_ids=[1])
    assert sampler(logits, [plain, held, stop_held]).tolist() == [EOS, 1, EOS]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_min_tokens_yields_where_a_grammar_allows_only_ending(sampler: Sampler, temperature: float) -> None:
    """A row whose (grammar-masked) logits allow nothing but EOS and stop tokens draws one of them
    under min_tokens instead of token 0 from a row of -inf; the other rows keep the ban."""
    inf = float("-inf")
    logits = torch.tensor([[inf, inf, inf, inf, 2.0], [inf, 1.0, inf, inf, 2.0], [inf, 3.0, inf, inf, inf]])
    only_eos = make_seq(temperature=temperature, seed=1, min_tokens=3)
    eos_or_one = make_seq(temperature=temperature, seed=1, min_tokens=3)
    only_stop = make_seq(temperature=temperature, seed=1, min_tokens=3, stop_token_ids=[1])
    assert sampler(logits, [only_eos, eos_or_one, only_stop]).tolist() == [EOS, 1, 1]


@pytest.mark.parametrize("params", [dict(temperature=1e-300), dict(temperature=1e-39), dict(top_p=1e-300)])
def test_settings_that_underflow_float32_keep_the_most_likely_token(sampler: Sampler, params: dict) -> None:
    """A temperature or top_p that rounds to 0 in float32 once divided logits into infinities (NaN
    probabilities, token 0 drawn every step); in a batch with a sampled row too."""
    logits = torch.tensor([[0.0, 1.0, 7.0, 0.0, 2.0], LOGITS[0]])
    assert sampler(logits, [make_seq(**params), make_seq(temperature=1.0, seed=3)])[0].item() == 2
