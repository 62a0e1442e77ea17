"""Scheduler and AsyncScheduler, no model: admission, token budget, decodes first, preemption, run-ahead."""

from __future__ import annotations

import pytest

from tests.helpers.fake_sequences import SAMPLED, make_seq, run_step, step
from tokenmill.engine.async_scheduler import AsyncScheduler
from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.scheduler import Scheduler
from tokenmill.engine.sequence import SequenceStatus


def scheduler(
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_seqs: int = 8,
    budget: int = 64,
    max_model_len: int = 256,
    run_ahead: bool = False,
) -> Scheduler:
    kind = AsyncScheduler if run_ahead else Scheduler
    return kind(BlockManager(num_blocks, block_size), max_num_seqs, budget, max_model_len)


def test_admission_is_first_come_first_served_up_to_max_num_seqs() -> None:
    sched = scheduler(max_num_seqs=2)
    a, b, c = make_seq(3, "a"), make_seq(3, "b"), make_seq(3, "c")
    for seq in (a, b, c):
        sched.add(seq)
    assert step(sched) == [(a, 3), (b, 3)]
    assert list(sched.waiting) == [c] and c.status is SequenceStatus.WAITING
    assert a.first_scheduled_time is not None and c.first_scheduled_time is None
    sched.finish(a, "stop")
    assert step(sched) == [(b, 1), (c, 3)]  # c takes a's place, behind the running decode


def test_a_prompt_larger_than_the_budget_is_prefilled_in_chunks() -> None:
    sched = scheduler(budget=10)
    long, short = make_seq(23, "long"), make_seq(6, "short")
    sched.add(long)
    sched.add(short)
    assert step(sched) == [(long, 10)]
    assert step(sched) == [(long, 10)]  # the budget is spent before short can be admitted
    assert step(sched) == [(long, 3), (short, 6)]  # admitted with the budget the chunk left
    assert long.num_output_tokens == short.num_output_tokens == 1
    assert step(sched) == [(long, 1), (short, 1)]


def test_decodes_go_before_prefill_chunks_and_share_the_budget() -> None:
    sched = scheduler(budget=8)
    first, second = make_seq(4, "first"), make_seq(12, "second")
    sched.add(first)
    sched.add(second)
    assert step(sched) == [(first, 4), (second, 4)]
    batch = sched.schedule()
    assert (batch.seqs, batch.num_new_tokens, batch.num_decodes) == ([first, second], [1, 7], 1)
    run_step(sched, batch)
    assert second.num_computed_tokens == 11 and second.num_output_tokens == 0


def test_running_out_of_blocks_preempts_the_newest_sequence() -> None:
    sched = scheduler(num_blocks=4, block_size=4)
    old, new = make_seq(list(range(1, 5)), "old"), make_seq(list(range(11, 15)), "new")
    sched.add(old)
    sched.add(new)
    assert step(sched) == [(old, 4), (new, 4)]  # one block each, one sampled token each
    for _ in range(4):  # tokens 5..8: a second block each, then decodes within it
        assert step(sched) == [(old, 1), (new, 1)]
    assert (old.block_ids, new.block_ids) == ([0, 2], [1, 3])
    # old's ninth token needs a third block; none is free, so the newest sequence gives its blocks up
    assert step(sched) == [(old, 1)]
    assert sched.num_preemptions == 1
    assert list(sched.waiting) == [new] and new.status is SequenceStatus.WAITING
    assert new.block_ids == [] and new.num_computed_tokens == 0 and new.num_output_tokens == 5
    assert old.block_ids == [0, 2, 3]  # took new's tail block; new's first block stays cached
    # once room is back, new resumes from its cached first block and recomputes the rest
    sched.finish(old, "stop")
    assert step(sched) == [(new, 5)]
    assert new.num_cached_tokens == 0  # counted at first admission only
    assert new.block_ids[0] == 1


def test_preemption_picks_the_newest_unscheduled_and_never_admits_in_the_same_step() -> None:
    sched = scheduler(num_blocks=3, block_size=2, budget=100)
    a, b, c = make_seq(2, "a"), make_seq(2, "b"), make_seq(2, "c")
    for seq in (a, b, c):
        sched.add(seq)
    step(sched)  # one block each: full
    waiting = make_seq(1, "late")
    sched.add(waiting)
    assert step(sched) == [(a, 1)]  # a needs a block: c goes, then b (both newer than a)
    assert list(sched.waiting) == [b, c, waiting]
    assert sched.num_preemptions == 2


def test_finish_frees_blocks_whatever_the_state() -> None:
    sched = scheduler(num_blocks=8)
    running, waiting = make_seq(9, "running"), make_seq(9, "waiting")
    sched.add(running)
    step(sched)
    sched.add(waiting)
    sched.finish(running, "abort")
    sched.finish(waiting, "abort")
    assert (running.finish_reason, running.status) == ("abort", SequenceStatus.FINISHED)
    assert not sched.running and not sched.waiting
    assert sched.block_manager.usage == 0.0


# ---- AsyncScheduler: when a decode step may run ahead of the host ----------------------------------


def decoding(run_ahead: bool = True, **params) -> tuple[Scheduler, list]:
    """A scheduler with two sequences past their prefill, decoding."""
    sched = scheduler(run_ahead=run_ahead)
    seqs = [make_seq(3, "a", **params), make_seq(5, "b", **params)]
    for seq in seqs:
        sched.add(seq)
    step(sched)
    return sched, seqs


def test_a_pure_decode_step_runs_ahead_one_token_per_sequence() -> None:
    sched, seqs = decoding()
    batch = sched.schedule()
    sched.commit(batch)  # launched; its tokens are not known yet
    follow = sched.continue_decoding(batch)
    assert follow is not None
    assert (follow.seqs, follow.num_new_tokens, follow.num_decodes) == (seqs, [1, 1], 2)
    sched.commit(follow)
    assert [s.num_computed_tokens - s.num_tokens for s in seqs] == [1, 1]  # one token ahead


def test_running_ahead_takes_a_new_block_when_the_next_position_needs_one() -> None:
    sched, (a, b) = decoding()
    batch = sched.schedule()
    sched.commit(batch)  # a: 4 computed (block 0 full); b: 6 computed of two blocks
    follow = sched.continue_decoding(batch)
    assert follow is not None
    assert (a.block_ids, b.block_ids) == ([0, 3], [1, 2])


@pytest.mark.parametrize(
    "params",
    [{"repetition_penalty": 1.2}, {"presence_penalty": 0.5}, {"logprobs": 0}, {"min_tokens": 5}],
    ids=["repetition-penalty", "presence-penalty", "logprobs", "min-tokens-pending"],
)
def test_no_running_ahead_when_sampling_needs_the_unknown_tokens(params) -> None:
    sched, _ = decoding(**params)
    batch = sched.schedule()
    sched.commit(batch)
    assert sched.continue_decoding(batch) is None


@pytest.mark.parametrize("min_tokens, runs_ahead", [(2, True), (3, False)])
def test_running_ahead_resumes_exactly_once_min_tokens_are_out(min_tokens: int, runs_ahead: bool) -> None:
    sched, seqs = decoding(min_tokens=min_tokens)
    step(sched)
    assert [s.num_output_tokens for s in seqs] == [2, 2]
    batch = sched.schedule()
    sched.commit(batch)
    assert (sched.continue_decoding(batch) is not None) == runs_ahead


def test_no_running_ahead_in_a_step_with_prefill() -> None:
    sched, _ = decoding()
    sched.add(make_seq(12, "c"))
    batch = sched.schedule()  # the two decodes plus c's prefill
    sched.commit(batch)
    assert batch.num_decodes == 2 and len(batch) == 3
    assert sched.continue_decoding(batch) is None


def test_no_running_ahead_when_a_one_token_step_is_a_prompt_chunk() -> None:
    sched, _ = decoding()
    sched.max_num_batched_tokens = 3
    c = make_seq(12, "c")
    sched.add(c)
    batch = sched.schedule()  # two decodes and one token of c's prompt: all single-token, c samples nothing
    sched.commit(batch)
    assert batch.num_decodes == len(batch) == 3 and c.num_computed_tokens < c.num_tokens
    assert sched.continue_decoding(batch) is None


def test_no_running_ahead_while_a_request_waits_for_admission() -> None:
    sched, _ = decoding()
    sched.max_num_seqs = 2
    sched.add(make_seq(3, "c"))
    batch = sched.schedule()  # full: c cannot be admitted, the batch is pure decode
    sched.commit(batch)
    assert batch.num_decodes == len(batch) == 2 and len(sched.waiting) == 1
    assert sched.continue_decoding(batch) is None


def test_no_running_ahead_at_the_context_limit() -> None:
    sched, (_, b) = decoding()
    batch = sched.schedule()
    sched.commit(batch)
    sched.max_model_len = b.num_computed_tokens  # b's next position would be past the context
    assert sched.continue_decoding(batch) is None
    sched.max_model_len += 1
    assert sched.continue_decoding(batch) is not None


def test_no_running_ahead_without_a_free_block() -> None:
    sched = AsyncScheduler(BlockManager(2, 4), 8, 64, 256)
    seq = make_seq(3)
    sched.add(seq)
    step(sched)  # 4 tokens, one full block; the other block is free
    batch = sched.schedule()
    sched.commit(batch)
    other = make_seq(4)
    assert sched.block_manager.allocate(other, 4)  # someone else takes the last block
    assert sched.continue_decoding(batch) is None


def test_the_synchronous_scheduler_never_runs_ahead() -> None:
    sched, _ = decoding(run_ahead=False)
    batch = sched.schedule()
    sched.commit(batch)
    assert sched.continue_decoding(batch) is None
    assert SAMPLED in sched.running[0].token_ids
