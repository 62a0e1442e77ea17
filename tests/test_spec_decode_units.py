"""Speculative decoding's parts, exactly: n-gram proposals, the speculator's caps and adaptive pause, the
acceptance rule, the output distribution of rejection sampling, and the K/V rollback of rejected tokens."""

from __future__ import annotations

import random

import pytest
import torch

from tests.helpers.fake_sequences import make_seq
from tokenmill.config import EngineConfig
from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch, Scheduler
from tokenmill.spec_decode.proposers import NgramProposer
from tokenmill.spec_decode.rejection_sampler import NO_TOKEN, RejectionSampler, emitted_tokens
from tokenmill.spec_decode.speculator import MIN_PAUSE, Speculator, build_speculator
from tokenmill.spec_decode.step_costs import RECALIBRATE_STEPS, StepCosts, expected_tokens


@pytest.mark.parametrize(
    ("tokens", "k", "expected"),
    [
        ([1, 2, 3, 4, 5, 9, 9, 1, 2, 3], 3, [4, 5, 9]),  # the 3-gram 1 2 3 recurs
        ([1, 2, 3, 4, 5, 9, 9, 2, 3], 3, [4, 5, 9]),  # only the 2-gram 2 3 does
        ([1, 2, 3, 4, 5, 9, 9, 2, 3], 1, [4]),  # k caps the proposal
        ([1, 2, 3, 4, 9, 2, 3, 7, 1, 2, 3], 2, [4, 9]),  # the longer match (1 2 3) beats the later 2 3
        ([1, 2, 8, 1, 2, 9, 5, 6, 1, 2], 2, [9, 5]),  # of equal matches, the latest with room
        ([1, 2, 8, 1, 2, 9, 1, 2], 3, [9, 1, 2]),  # the latest has just room for 3
        ([1, 2, 8, 1, 2, 9, 1, 2], 4, [8, 1, 2, 9]),  # not for 4: the earliest, whose continuation is longest
        ([7, 8, 9, 10], 3, []),  # no repeated suffix
        ([4, 5, 6, 1, 5, 6], 3, [1, 5, 6]),
        ([4, 5, 6, 1, 6], 3, []),  # a 1-token match is below prompt_lookup_min
        ([1, 2, 3], 0, []),
    ],
)
def test_ngram_proposals(tokens: list[int], k: int, expected: list[int]) -> None:
    assert NgramProposer(2, 3).propose(make_seq(tokens), k) == expected


def test_ngram_longest_match_is_capped_by_max_n() -> None:
    tokens = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 7, 3, 4, 5]
    assert NgramProposer(2, 3).propose(make_seq(tokens), 2) == [7, 3]  # 3 4 5: latest with room
    assert NgramProposer(2, 2).propose(make_seq(tokens), 2) == [7, 3]


def _ngram_reference(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """The proposal rule spelled out: the longest suffix (min_n..max_n) that occurred before with a token
    after it; of its occurrences the latest with k tokens after it, else the earliest."""
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        suffix = tokens[len(tokens) - n :]
        ends = [end for end in range(n, len(tokens)) if tokens[end - n : end] == suffix]
        if ends and k > 0:
            with_room = [end for end in ends if end <= len(tokens) - k]
            end = with_room[-1] if with_room else ends[0]
            return tokens[end : end + k]
    return []


def test_ngram_index_matches_the_rule_as_the_sequence_grows() -> None:
    """The incremental index, probed after every appended token (one or several at a time, as verify
    steps append), proposes what a scan of the whole sequence does."""
    rng = random.Random(0)
    for trial in range(20):
        min_n, max_n = rng.choice([(1, 2), (2, 3), (2, 4), (3, 3)])
        proposer = NgramProposer(min_n, max_n)
        seq = make_seq([rng.randrange(6) for _ in range(rng.randrange(1, 12))])
        for _ in range(40):
            k = rng.randrange(0, 6)
            assert proposer.propose(seq, k) == _ngram_reference(seq.token_ids, k, min_n, max_n), trial
            for _ in range(rng.randrange(1, 4)):
                seq.append_token(rng.randrange(6))


def test_ngram_lookup_follows_a_growing_sequence() -> None:
    """The index grows with the sequence."""
    proposer = NgramProposer(2, 4)
    seq = make_seq([9, 8, 7])
    assert proposer.propose(seq, 3) == []
    for token in range(300):
        seq.append_token(token)
    for token in (9, 8):
        seq.append_token(token)
    assert proposer.propose(seq, 3) == [7, 0, 1]
    assert proposer.propose(seq, 3) == [7, 0, 1]


def test_speculator_caps_proposals_by_max_tokens_model_len_and_budget() -> None:
    speculator = Speculator(NgramProposer(1, 2), num_tokens=4, disable_batch_size=8, adaptive=False)
    loop = [5, 6] * 10
    free = make_seq(loop, max_tokens=100)
    nearly_done = make_seq(loop, max_tokens=3)  # 3 tokens left: 2 proposals + the target's token
    proposals = speculator.propose([free, nearly_done], budget=100, max_model_len=1000)
    assert proposals == {free.seq_id: [5, 6, 5, 6], nearly_done.seq_id: [5, 6]}
    assert speculator.propose([free], budget=100, max_model_len=23) == {free.seq_id: [5, 6]}
    assert speculator.propose([free, nearly_done], budget=5, max_model_len=1000) == {
        free.seq_id: [5, 6, 5, 6],
        nearly_done.seq_id: [5],
    }
    done = make_seq(loop, max_tokens=1)
    assert speculator.propose([done], budget=100, max_model_len=1000) == {}


def test_speculator_is_off_for_large_batches_and_backs_off_when_it_does_not_pay() -> None:
    speculator = Speculator(NgramProposer(1, 2), num_tokens=2, disable_batch_size=2)
    for k, seconds in ((0, 1.0), (1, 1.5), (2, 1.5)):  # verify steps measured at 1.5 decode steps:
        speculator.costs.record(2, k, seconds)  # they break even at 0.5 accepted tokens per sequence
    seqs = [make_seq([5, 6] * 4) for _ in range(3)]
    assert speculator.propose(seqs, 100, 1000) == {} and not speculator.wants(3)

    def speculate_step(accepted: int) -> None:
        assert speculator.propose(seqs[:2], 100, 1000)
        speculator.tick()  # as the engine does once the step's tokens are in
        speculator.record(2, accepted)

    def paused_steps() -> int:
        count = 0
        while not speculator.wants(2):
            assert speculator.propose(seqs[:2], 100, 1000) == {}
            speculator.tick()
            count += 1
        return count

    for _ in range(3):  # gain 1.0 -> 0.8 -> 0.64 -> 0.51: still worth it
        speculate_step(0)
    assert speculator.wants(2)
    speculate_step(0)  # 0.41: pause
    assert paused_steps() == MIN_PAUSE
    speculate_step(0)  # the probe fails: twice as long
    assert paused_steps() == 2 * MIN_PAUSE
    speculate_step(4)  # two tokens per sequence (gain 0.8): on again, and the next pause is short again
    for _ in range(3):
        speculate_step(0)
    assert paused_steps() == MIN_PAUSE


def test_adaptive_k_follows_the_acceptance_under_the_prior_costs() -> None:
    """Unmeasured, a verify step of k is assumed to cost 1 + k/8 decode steps: k grows with acceptance."""
    speculator = Speculator(NgramProposer(1, 2), num_tokens=6, disable_batch_size=8)
    speculator.costs.record(1, 0, 1.0)  # a decode step's time: only verify steps' are assumed
    seq = make_seq([5, 6] * 10)
    assert speculator.propose([seq], 100, 1000) == {seq.seq_id: [5, 6, 5, 6, 5, 6]}
    for _ in range(12):
        speculator.tick()
        speculator.record(1, 1)  # one accepted, then a rejection: acceptance falls towards 1/2
    assert speculator.step_tokens() == 2
    assert speculator.propose([seq], 100, 1000) == {seq.seq_id: [5, 6]}
    for _ in range(12):
        speculator.tick()
        speculator.record(1, 2)  # two accepted per rejection: 2/3
    assert speculator.step_tokens() == 3
    fixed = Speculator(NgramProposer(1, 2), num_tokens=6, disable_batch_size=8, adaptive=False)
    fixed.record(1, 0)
    assert fixed.step_tokens() == 6


def test_step_costs_choose_the_k_with_the_most_tokens_per_second() -> None:
    assert expected_tokens(0, 0.5) == 1 and expected_tokens(3, 0.5) == 1.875 and expected_tokens(4, 1.0) == 5
    costs = StepCosts()
    assert costs.ratio(3, 4) == 1.5  # the prior, until both times are measured
    costs.record(3, 0, 1.0)  # batch sizes 3 and 4 share a bucket
    costs.record(4, 4, 1.2)
    costs.record(4, 4, 2.2)  # a moving average: 1.2 + 0.2 * 1.0
    assert costs.ratio(3, 4) == pytest.approx(1.4) and costs.ratio(8, 4) == 1.5
    assert costs.best_k(3, 4, 0.9) == (4, pytest.approx(expected_tokens(4, 0.9) / 1.4))
    assert costs.best_k(3, 4, 0.3)[0] == 1  # poor acceptance: the cheapest verify step
    costs.record(16, 0, 1.0)
    for k in range(1, 5):  # slow verify steps (eager, or a large batch): nothing pays at 0.5
        costs.record(16, k, 3.0)
    assert costs.best_k(16, 4, 0.5)[1] < 1 and costs.best_k(3, 4, 0.5)[1] > 1


def test_speculation_pauses_when_the_measured_verify_cost_exceeds_the_gain() -> None:
    """The break-even gain is the measured verify/decode time ratio - 1: 0.8 accepted tokens per
    sequence do not pay for verify steps of 2 decode steps, 0.2 pay for steps of 1.1."""

    def steps_until_paused(verify_seconds: float, accepted: int) -> int:
        speculator = Speculator(NgramProposer(1, 2), num_tokens=1, disable_batch_size=8)
        speculator.costs.record(5, 0, 1.0)
        speculator.costs.record(5, 1, verify_seconds)
        seqs = [make_seq([5, 6] * 4) for _ in range(5)]
        for step in range(40):
            if not speculator.propose(seqs, 100, 1000):
                return step
            speculator.tick()
            speculator.record(5, accepted)
        return 40

    assert steps_until_paused(2.0, accepted=4) < 10
    assert steps_until_paused(1.1, accepted=1) == 40


def test_a_plain_decode_step_is_timed_first_and_again_when_stale() -> None:
    speculator = Speculator(NgramProposer(1, 2), num_tokens=2, disable_batch_size=8)
    seq = make_seq([5, 6] * 4)
    assert not speculator.wants(1) and speculator.propose([seq], 100, 1000) == {}
    speculator.record_time(ScheduledBatch([seq], [1], 1), 1.0)
    assert speculator.wants(1) and not speculator.wants(2)  # another batch-size bucket
    for _ in range(RECALIBRATE_STEPS + 1):
        speculator.record_time(ScheduledBatch([seq], [3], 0, [[5, 6]]), 1.2)
    assert not speculator.wants(1)
    assert Speculator(NgramProposer(1, 2), 2, 8, adaptive=False).wants(1)


def test_step_times_feed_the_cost_model_by_kind() -> None:
    speculator = Speculator(NgramProposer(1, 2), num_tokens=4, disable_batch_size=8)
    a, b = make_seq([1, 2, 3]), make_seq([4, 5, 6])
    speculator.record_time(ScheduledBatch([a, b], [1, 1], 2), 1.0)  # decode
    speculator.record_time(ScheduledBatch([a, b], [3, 1], 1, [[7, 8], []]), 1.3)  # verify, k = 2
    speculator.record_time(ScheduledBatch([a, b], [1, 3], 1), 9.0)  # a prefill chunk: not a decode's cost
    speculator.record_time(ScheduledBatch([a, b], [3, 5], 0, [[7, 8], []]), 9.0)  # nor a verify's
    assert speculator.costs.ratio(2, 2) == pytest.approx(1.3)


def test_build_speculator_from_config() -> None:
    assert build_speculator(EngineConfig()) is None
    speculator = build_speculator(EngineConfig(speculative_method="ngram", num_speculative_tokens=3))
    assert speculator is not None and speculator.num_tokens == 3
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        EngineConfig(prompt_lookup_min=3, prompt_lookup_max=2)
    with pytest.raises(ValueError, match="tensor_parallel_size=1"):
        EngineConfig(speculative_method="ngram", tensor_parallel_size=2)
    assert EngineConfig(speculative_method="ngram", data_parallel_size=2).data_parallel_size == 2


def _logits_preferring(rows: list[int], vocab: int = 8) -> torch.Tensor:
    """One row per entry, whose argmax is that entry."""
    logits = torch.zeros(len(rows), vocab)
    logits[torch.arange(len(rows)), torch.tensor(rows)] = 5.0
    return logits


def test_greedy_acceptance_takes_proposals_up_to_the_first_miss_then_the_target() -> None:
    sampler = RejectionSampler(Sampler(torch.device("cpu"), 0, ()))
    seqs = [make_seq([1, 2], temperature=0) for _ in range(4)]
    proposals = [[3, 4], [3, 4, 5], [], [6]]
    # target argmax per row:  seq 0: 3 4 | 7   seq 1: 3 0 5 | 1   seq 2: 2   seq 3: 1 | 6
    logits = _logits_preferring([3, 4, 7, 3, 0, 5, 1, 2, 1, 6])
    tokens = sampler(logits, seqs, proposals).tolist()
    assert tokens == [3, 4, 7, 3, 0, 5, 1, 2, 1, 6]  # greedy: the target's argmax, cut on the host
    pairs, rows = emitted_tokens(seqs, proposals, tokens)
    assert [(seqs.index(s), t) for s, t in pairs] == [(0, 3), (0, 4), (0, 7), (1, 3), (1, 0), (2, 2), (3, 1)]
    assert rows == [0, 1, 2, 3, 4, 7, 8]


def test_emitted_run_ends_at_the_first_row_off_its_proposal_or_at_no_token() -> None:
    """Greedy rows hold the target's token (the run ends at the first that differs from its proposal);
    sampled rows after a rejection hold NO_TOKEN, which also ends it, even when the rejected row's
    replacement happens to be the proposal itself."""
    seq = make_seq([1, 2])
    assert [t for _, t in emitted_tokens([seq], [[3, 4]], [3, 4, 9])[0]] == [3, 4, 9]
    assert [t for _, t in emitted_tokens([seq], [[3, 4]], [3, 8, 9])[0]] == [3, 8]
    assert [t for _, t in emitted_tokens([seq], [[3, 4]], [3, NO_TOKEN, NO_TOKEN])[0]] == [3]


def test_greedy_verification_uploads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A greedy batch is verified from the target's argmax alone: no host list becomes a device tensor
    (on CUDA, `torch.tensor(list, device=...)` waits for the forward pass to finish)."""
    sampler = RejectionSampler(Sampler(torch.device("cpu"), 0, ()))
    seqs = [make_seq([1, 2], temperature=0) for _ in range(2)]
    logits = _logits_preferring([3, 4, 7, 1, 6])

    def no_upload(*args: object, **kwargs: object) -> None:
        raise AssertionError("a greedy verify step built a tensor from a host list")

    monkeypatch.setattr(torch, "tensor", no_upload)
    assert sampler(logits, seqs, [[3, 4], [6]]).tolist() == [3, 4, 7, 1, 6]


def test_verification_applies_min_tokens_per_row() -> None:
    """EOS is banned until min_tokens are out, counting the proposals before each row."""
    eos = 7
    sampler = RejectionSampler(Sampler(torch.device("cpu"), 0, (eos,)))
    seq = make_seq([1, 2], temperature=0, min_tokens=2)
    logits = _logits_preferring([3, eos, eos])  # the raw argmax is EOS after the first proposal
    logits[:, 5] = 4.0  # the runner-up
    pairs, _ = emitted_tokens([seq], [[3, eos]], sampler(logits, [seq], [[3, eos]]).tolist())
    assert [token for _, token in pairs] == [3, 5]
    seq_done = make_seq([1, 2], temperature=0, min_tokens=1)  # the second row may end the sequence
    assert sampler(logits, [seq_done], [[3, eos]]).tolist() == [3, eos, eos]


CHI2_999 = {
    5: 20.515,
    4: 18.467,
    3: 16.266,
    2: 13.816,
    1: 10.828,
}  # chi-square 0.999 quantiles by degrees of freedom


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a token of zero target probability was emitted"
    expected = probs[keep] * counts.sum()
    return float(((counts[keep] - expected) ** 2 / expected).sum())


@pytest.mark.parametrize(
    ("draft", "params"),
    [
        (2, {"temperature": 1.0}),  # the most likely token
        (4, {"temperature": 0.7}),  # an unlikely one
        (5, {"temperature": 1.3, "top_k": 5}),  # one top-k removes: always rejected
        (1, {"temperature": 0.9, "top_p": 0.9, "min_p": 0.05}),
    ],
)
def test_rejection_sampling_reproduces_the_target_distribution(draft: int, params: dict) -> None:
    """Many draws of [last token + 1 proposal]: the first token is distributed as the target's row 0
    (after every sampling rule), and so is the second, whenever the proposal was accepted."""
    torch.manual_seed(0)
    vocab, draws = 6, 8000
    base = torch.tensor([[0.3, 1.2, 2.0, 0.1, -0.5, -1.0], [1.0, -0.2, 0.4, 0.8, 0.0, 1.5]])
    sampler = Sampler(torch.device("cpu"), 1234, ())
    seqs = [make_seq([1, 2], **params) for _ in range(draws)]
    logits = base.repeat(draws, 1)
    tokens = RejectionSampler(sampler)(logits, seqs, [[draft]] * draws).view(draws, 2)
    targets = [sampler.target_probs(base[i : i + 1], seqs[:1])[0] for i in range(2)]
    targets = [p / p.sum() for p in targets]
    first = torch.bincount(tokens[:, 0], minlength=vocab).float()
    dof = int((targets[0] > 0).sum()) - 1
    assert _chi_square(first, targets[0]) < CHI2_999[dof]
    accepted = tokens[:, 0] == draft
    assert (tokens[~accepted, 1] == NO_TOKEN).all() and (tokens[accepted, 1] != NO_TOKEN).all()
    if accepted.sum() > 1000:
        second = torch.bincount(tokens[accepted, 1], minlength=vocab).float()
        dof = int((targets[1] > 0).sum()) - 1
        assert _chi_square(second, targets[1]) < CHI2_999[dof]
    # The test can tell: taking every proposal as it is would be far off.
    always_accepted = torch.zeros(vocab).index_fill_(0, torch.tensor([draft]), float(draws))
    if targets[0][draft] > 0:
        assert _chi_square(always_accepted, targets[0]) > 100 * CHI2_999[5]


def test_seeded_verification_is_reproducible() -> None:
    logits = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(2):
        sampler = RejectionSampler(Sampler(torch.device("cpu"), 0, ()))
        seq = make_seq([1, 2], temperature=1.0, seed=7)
        runs.append(sampler(logits, [seq], [[3, 4]]).tolist())
    assert runs[0] == runs[1]


def test_rollback_frees_the_blocks_only_rejected_tokens_used() -> None:
    manager = BlockManager(num_blocks=8, block_size=4)
    scheduler = Scheduler(manager, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=64)
    seq = make_seq(6)  # 6 prompt tokens + 1 sampled = 7 tokens, 6 computed: two blocks
    assert manager.allocate(seq, 6)
    seq.num_computed_tokens = 6
    seq.append_token(1)
    manager.cache_full_blocks(seq)
    assert manager.allocate(seq, 1 + 5)  # verify the newest token + 5 proposals: 12 positions, 3 blocks
    seq.num_computed_tokens += 6
    generation = seq.block_generation
    seq.append_token(2)  # one proposal accepted, then the target's token: 8 known tokens, 7 computed
    seq.append_token(3)
    scheduler.rollback(seq)
    assert seq.num_computed_tokens == 8 and len(seq.block_ids) == 2
    assert seq.block_generation == generation + 1
    assert manager.usage == pytest.approx(2 / 8)
    manager.free(seq)
    assert manager.usage == 0
