"""Continuous batching under a per-step token budget.

Every step, running sequences go first (decodes before prefill chunks, so a long prompt never stalls
generation), then waiting sequences are admitted first-come-first-served while the budget, the
sequence limit and free KV blocks allow. A prompt larger than the budget is prefilled in chunks over
several steps. When blocks run out, the newest running sequence is preempted: its blocks are freed and
it is recomputed later, mostly from the prefix cache.

With a `Speculator`, decoding sequences may also get proposed tokens once everything else is scheduled:
their step becomes a chunk of 1 + k tokens, whose rejected tail `settle_proposals` takes back afterwards
(and counts what was accepted).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.sequence import Sequence, SequenceStatus

if TYPE_CHECKING:
    from tokenmill.lora.manager import LoRAManager
    from tokenmill.spec_decode.speculator import Speculator


@dataclass
class ScheduledBatch:
    """Sequences to run this step with how many new tokens each; single-token ones come first.
    `proposals` (None when nobody speculates) lists per sequence the proposed tokens that follow its
    last known token in its chunk."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    num_decodes: int = 0
    proposals: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        speculator: Speculator | None = None,
    ) -> None:
        self.block_manager = block_manager
        self.speculator = speculator
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.lora: LoRAManager | None = None  # with LoRA on, admits a sequence only if its adapter has a slot

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        chosen: list[tuple[Sequence, int]] = []
        scheduled: set[int] = set()
        preempted = False
        block_size = self.block_manager.block_size
        decoding = [s for s in self.running if s.num_uncomputed_tokens == 1]
        candidates = (
            decoding
            if len(decoding) == len(self.running)
            else decoding + [s for s in self.running if s.num_uncomputed_tokens > 1]
        )
        for seq in candidates:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted as a victim earlier in this loop
            num_new = min(seq.num_uncomputed_tokens, budget)
            fits = seq.num_computed_tokens + num_new <= len(seq.block_ids) * block_size
            while not (fits or self.block_manager.allocate(seq, num_new)):
                victim = self._newest_unscheduled(scheduled)
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                chosen.append((seq, num_new))
                scheduled.add(seq.seq_id)
                budget -= num_new
        if not preempted:
            budget = self._admit_waiting(budget, chosen)
        proposals = self._add_proposals(chosen, budget) if self.speculator is not None else {}
        chosen.sort(key=lambda item: item[1] > 1)
        batch = ScheduledBatch([s for s, _ in chosen], [n for _, n in chosen])
        batch.num_decodes = sum(1 for n in batch.num_new_tokens if n == 1)
        if proposals:
            batch.proposals = [proposals.get(seq.seq_id, []) for seq in batch.seqs]
        return batch

    def _add_proposals(self, chosen: list[tuple[Sequence, int]], budget: int) -> dict[int, list[int]]:
        """Grow the chosen decodes by their proposals where blocks are free (never preempting for them);
        returns the proposals that made it, by seq_id."""
        assert self.speculator is not None
        decoding = [seq for seq, n in chosen if n == 1 == seq.num_uncomputed_tokens]
        proposals = self.speculator.propose(decoding, budget, self.max_model_len)
        for i, (seq, _) in enumerate(chosen):
            draft = proposals.get(seq.seq_id)
            if draft is None:
                continue
            if self.block_manager.allocate(seq, 1 + len(draft)):
                chosen[i] = (seq, 1 + len(draft))
            else:
                del proposals[seq.seq_id]
        return proposals

    def continue_decoding(self, previous: ScheduledBatch) -> ScheduledBatch | None:
        """A step to launch before `previous`'s sampled tokens reach the host, or None. This scheduler
        never launches ahead: every step is scheduled from known tokens (see AsyncScheduler)."""
        return None

    def _admit_waiting(self, budget: int, chosen: list[tuple[Sequence, int]]) -> int:
        admit_lora = self.lora.admitter(self.running) if self.lora is not None and self.waiting else None
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if admit_lora is not None and not admit_lora(seq):
                break
            self.block_manager.match_prefix(seq)
            num_new = min(seq.num_uncomputed_tokens, budget)
            if not self.block_manager.allocate(seq, num_new):
                self.block_manager.free(seq)
                break
            self.waiting.popleft()
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = time.monotonic()
                seq.num_cached_tokens = seq.num_computed_tokens
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            chosen.append((seq, num_new))
            budget -= num_new
        return budget

    def _newest_unscheduled(self, scheduled: set[int]) -> Sequence:
        for seq in reversed(self.running):
            if seq.seq_id not in scheduled:
                return seq
        raise AssertionError("the sequence being scheduled is itself unscheduled")

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        if self.speculator is not None:
            self.speculator.release(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def commit(self, batch: ScheduledBatch) -> None:
        """Record that the batch's tokens are now in the cache, and share newly full blocks."""
        block_size = self.block_manager.block_size
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += num_new
            if seq.num_computed_tokens // block_size > len(seq.block_hashes):
                self.block_manager.cache_full_blocks(seq)

    def settle_proposals(
        self, sampled: list[tuple[Sequence, int]], batch: ScheduledBatch
    ) -> tuple[int, int, int]:
        """After a step's tokens are appended: roll back the K/V of rejected proposals, drop logprobs of
        tokens cut by a stop, and count what was proposed and accepted (drafts, proposed tokens,
        accepted tokens)."""
        assert self.speculator is not None
        self.speculator.tick()
        if batch.proposals is None:
            return 0, 0, 0
        emitted = Counter(seq.seq_id for seq, _ in sampled)
        drafts_in_step = proposed_in_step = accepted_in_step = rejections_in_step = 0
        for seq, draft in zip(batch.seqs, batch.proposals):
            if not draft:
                continue
            accepted = emitted[seq.seq_id] - 1
            drafts_in_step += 1
            rejections_in_step += accepted < len(draft) and not seq.is_finished
            proposed_in_step += len(draft)
            accepted_in_step += accepted
            if seq.logprobs is not None:
                del seq.logprobs[seq.num_output_tokens :]
            if not seq.is_finished:
                self.rollback(seq)
        self.speculator.record(drafts_in_step, accepted_in_step, rejections_in_step)
        return drafts_in_step, proposed_in_step, accepted_in_step

    def rollback(self, seq: Sequence) -> None:
        """After a verify step: forget the K/V of rejected proposals (everything past the sequence's
        known tokens but the newest), freeing the blocks only they used."""
        self.block_manager.trim(seq, seq.num_tokens - 1)

    def finish(self, seq: Sequence, reason: str, stop_reason: str | int | None = None) -> None:
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        if self.speculator is not None:
            self.speculator.release(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason, seq.stop_reason = reason, stop_reason
