"""Who speculates this step and how far, and whether speculation is paying off.

Verifying proposals turns a decode into a several-token chunk: the step (a CUDA graph replay where one is
captured, see `verify_graphs`) cannot be launched ahead by async scheduling, and each proposed token
costs compute. That pays while decoding is bound by reading the weights (small batches) and proposals
are mostly accepted, so:
- no proposals while more than `disable_batch_size` sequences decode (the batch is compute-heavy);
- adaptively, k is chosen each step from the measured acceptance and the measured time of verify steps
  of each k relative to decode steps at this batch size (`step_costs`): the k with the most tokens per
  unit of time; a plain decode step is run now and then to keep its time measured;
- adaptively, the gain (tokens accepted per eligible sequence per step, a moving average) is watched:
  when it is below the break-even of the step's measured cost (a verify step taking 1.3 decode steps
  needs 0.3 accepted tokens per sequence), speculation pauses, then one step probes again. Each failed
  probe doubles the pause (from `MIN_PAUSE` up to `MAX_PAUSE` steps), so a proposer that never pays
  costs almost nothing, and a good step resets it, so a request that starts copying is caught within a
  few steps.
"""

from __future__ import annotations

import functools

from tokenmill.config import EngineConfig
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.spec_decode.proposers import BatchProposer, NgramProposer, Proposer
from tokenmill.spec_decode.step_costs import SMOOTHING, StepCosts

MIN_PAUSE, MAX_PAUSE = 8, 256  # steps without speculation after it stopped paying


class Speculator:
    def __init__(
        self,
        proposer: Proposer | BatchProposer,
        num_tokens: int,
        disable_batch_size: int,
        adaptive: bool = True,
    ) -> None:
        self.proposer = proposer
        self.num_tokens = num_tokens
        self.disable_batch_size = disable_batch_size
        self.adaptive = adaptive
        self.costs = StepCosts()
        self.acceptance = 1.0  # of one proposal, given those before it were accepted (moving average)
        self.gain = 1.0  # optimistic start: speculate until measured otherwise
        self._shape = (1, num_tokens)  # (sequences, k) of the latest step that could speculate
        self._clock = 0
        self._paused_until = 0
        self._pause = MIN_PAUSE
        self._num_eligible = 0

    def wants(self, num_decoding: int) -> bool:
        """Whether a step of `num_decoding` decoding sequences would speculate (so none may be launched
        before the previous step's tokens are known)."""
        if num_decoding > self.disable_batch_size or self._clock < self._paused_until:
            return False
        return not (self.adaptive and self.costs.needs_decode_step(num_decoding))

    def propose(self, seqs: list[Sequence], budget: int, max_model_len: int) -> dict[int, list[int]]:
        """Proposals by seq_id for decoding sequences (all their tokens known), at most `budget` tokens
        in all; each is short enough that accepting it all plus the target's token stays within the
        sequence's max_tokens and `max_model_len`. A sequence under a grammar gets none: its mask is
        known for the next token only, not for positions after proposals."""
        if not seqs or not self.wants(len(seqs)):
            return {}
        k = self.step_tokens(len(seqs))
        eligible: list[Sequence] = []
        rooms: list[int] = []
        for seq in seqs:
            params = seq.params
            if params.structured_outputs is not None:
                continue
            tokens_left = (params.max_tokens or max_model_len) - seq.num_output_tokens
            room = min(k, budget, tokens_left - 1, max_model_len - seq.num_tokens - 1)
            if room > 0:
                eligible.append(seq)
                rooms.append(room)
                budget -= room
        proposer = self.proposer
        if _proposes_in_batches(type(proposer)):
            drafts = proposer.propose_batch(eligible, rooms) if eligible else []
        else:
            drafts = [proposer.propose(seq, room) for seq, room in zip(eligible, rooms)]
        proposals = {seq.seq_id: draft for seq, draft in zip(eligible, drafts) if draft}
        self._num_eligible = len(seqs)
        self._shape = (len(seqs), max(map(len, proposals.values()), default=k))
        if not proposals:
            self._observe(0.0)
        return proposals

    def release(self, seq: Sequence) -> None:
        """`seq` finished or was preempted: a proposer's state for it goes."""
        if _proposes_in_batches(type(self.proposer)):
            self.proposer.release(seq)

    def step_tokens(self, num_seqs: int = 1) -> int:
        """k for a step of `num_seqs` sequences: `num_tokens`, or adaptively the best for the measured
        acceptance and step times."""
        if not self.adaptive:
            return self.num_tokens
        return self.costs.best_k(num_seqs, self.num_tokens, self.acceptance)[0]

    def record(self, num_drafts: int, num_accepted: int, num_rejections: int | None = None) -> None:
        """The outcome of the step that verified the last proposals: `num_drafts` sequences proposed,
        `num_accepted` of their tokens were accepted, and `num_rejections` drafts ended at a rejected
        token (the rest were accepted whole or cut by a stop; None: every draft)."""
        rejections = num_drafts if num_rejections is None else num_rejections
        if self.adaptive and num_accepted + rejections:
            acceptance = num_accepted / (num_accepted + rejections)
            self.acceptance += SMOOTHING * (acceptance - self.acceptance)
        self._observe(num_accepted / max(self._num_eligible, 1))

    def record_time(self, batch: ScheduledBatch, seconds: float) -> None:
        """The wall time of an engine step: a decode or verify step's goes into the cost model."""
        proposals = batch.proposals
        if proposals is None:
            if batch.num_decodes == len(batch):
                self.costs.record(len(batch), 0, seconds)
        elif all(n == 1 + len(d) for n, d in zip(batch.num_new_tokens, proposals)):
            self.costs.record(len(batch), max(map(len, proposals)), seconds)

    def tick(self) -> None:
        """One engine step has passed (pauses are counted in steps)."""
        self._clock += 1

    def _observe(self, gain: float) -> None:
        if not self.adaptive:
            return
        break_even = self.costs.ratio(*self._shape) - 1.0
        self.gain += SMOOTHING * (gain - self.gain)
        if self.gain < break_even:
            self._paused_until = self._clock + self._pause
            self._pause = min(2 * self._pause, MAX_PAUSE)
            self.gain = break_even  # after the pause, one probe decides
        elif gain >= break_even:
            self._pause = MIN_PAUSE


@functools.cache
def _proposes_in_batches(proposer_type: type) -> bool:
    """Whether a proposer class is a `BatchProposer`: a protocol check walks the class's attributes, so
    it is made once per class rather than per step."""
    return issubclass(proposer_type, BatchProposer)


def build_speculator(config: EngineConfig, draft: BatchProposer | None = None) -> Speculator | None:
    """The speculator `config` asks for (with `draft`, the loaded draft model's proposer, for 'draft'),
    or None without speculation."""
    if config.speculative_method == "none":
        return None
    proposer: Proposer | BatchProposer
    if config.speculative_method == "draft":
        assert draft is not None, "the engine loads the draft model first"
        proposer = draft
    else:
        proposer = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)
    return Speculator(
        proposer,
        config.num_speculative_tokens,
        config.speculative_disable_batch_size,
        config.speculative_adaptive,
    )
