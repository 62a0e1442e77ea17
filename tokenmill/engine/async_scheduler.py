"""Async scheduling: the policy for launching a decode step before the previous step's tokens are known.

While a pure-decode step runs on the device, the next one is queued behind it, fed by the first one's
sampled tokens straight from the device; the host meanwhile turns the first step's tokens into text and
checks stops. A sequence that stops in between discards its one speculative token. Everything else is
the plain `Scheduler`'s: only the rule for when a step may run ahead, and that step, differ.

Speculative decoding needs the known tokens to propose from, so no step is launched ahead while the
speculator would speculate for the batch (it stays on for batches too large to speculate); a verify
step itself is never pure decode, so it is never continued either.
"""

from __future__ import annotations

from tokenmill.engine.scheduler import ScheduledBatch, Scheduler
from tokenmill.engine.sequence import SequenceStatus


class AsyncScheduler(Scheduler):
    def continue_decoding(self, previous: ScheduledBatch) -> ScheduledBatch | None:
        """The same decoding sequences, one more token each; None when the next step needs real
        scheduling: the rule below says no, something waits for admission, or a block cannot be had."""
        if not self._may_continue(previous):
            return None
        if self.waiting or len(previous) != len(self.running):
            return None
        block_size = self.block_manager.block_size
        allocate, running = self.block_manager.allocate, SequenceStatus.RUNNING
        for seq in previous.seqs:
            if seq.status is not running:
                return None
            if seq.num_computed_tokens >= len(seq.block_ids) * block_size and not allocate(seq, 1):
                return None
        return ScheduledBatch(list(previous.seqs), [1] * len(previous), len(previous))

    def _may_continue(self, batch: ScheduledBatch) -> bool:
        """A step may run ahead only if it is pure decode and no sampling decision in it depends on the
        tokens not yet known: no penalties, no logprobs, no min_tokens still pending, and there is room
        for one more position. (Grammar masks do follow the unknown token: the engine queues such a
        step's forward pass now and its sampling once the token is known, see LLMEngine.step.)
        A one-token step of a prompt that is not yet all computed counts as a decode but samples
        nothing, so there would be no token to feed the next step."""
        if batch.num_decodes != len(batch):
            return False
        max_model_len = self.max_model_len
        if self.speculator is not None and self.speculator.wants(len(batch)):
            return False
        for seq in batch.seqs:
            computed = seq.num_computed_tokens
            if not seq.runs_ahead_from <= len(seq.token_ids) <= computed < max_model_len:
                return False
        return True
