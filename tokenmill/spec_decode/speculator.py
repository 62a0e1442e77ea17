"""Who speculates this step and how far, and whether speculation is paying off.

Verifying proposals turns a decode into a several-token chunk: the step (a CUDA graph replay where one is
captured, see `verify_graphs`) cannot be launched ahead by async scheduling, and each proposed token
costs compute. That pays while
decoding is bound by reading the weights (small batches) and proposals are mostly accepted, so:
- no proposals while more than `disable_batch_size` sequences decode (the batch is compute-heavy);
- adaptively, the gain (tokens accepted per eligible sequence per step, a moving average) is watched;
  below `MIN_GAIN` speculation pauses, then one step probes again. Each failed probe doubles the pause
  (from `MIN_PAUSE` up to `MAX_PAUSE` steps), so a proposer that never pays costs almost nothing, and a
  good step resets it, so a request that starts copying is caught within a few steps;
- adaptively, k follows the measured accepted length (a moving average over drafts): proposals one
  token longer than what is usually accepted, so mediocre acceptance does not pay for long drafts.
"""

from __future__ import annotations

from tokenmill.config import EngineConfig
from tokenmill.engine.sequence import Sequence
from tokenmill.spec_decode.proposers import BatchProposer, NgramProposer, Proposer

MIN_GAIN = 0.5  # accepted tokens per sequence-step below which a verify step costs more than it brings
MIN_PAUSE, MAX_PAUSE = 8, 256  # steps without speculation after it stopped paying
SMOOTHING = 0.2  # weight of the newest step in the moving average


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
        self.gain = 1.0  # optimistic start: speculate until measured otherwise
        self.accepted_length = float(num_tokens)  # accepted proposals per draft, moving average
        self._clock = 0
        self._paused_until = 0
        self._pause = MIN_PAUSE
        self._num_eligible = 0

    def wants(self, num_decoding: int) -> bool:
        """Whether a step of `num_decoding` decoding sequences would speculate (so none may be launched
        before the previous step's tokens are known)."""
        return num_decoding <= self.disable_batch_size and self._clock >= self._paused_until

    def propose(self, seqs: list[Sequence], budget: int, max_model_len: int) -> dict[int, list[int]]:
        """Proposals by seq_id for decoding sequences (all their tokens known), at most `budget` tokens
        in all; each is short enough that accepting it all plus the target's token stays within the
        sequence's max_tokens and `max_model_len`. A sequence under a grammar gets none: its mask is
        known for the next token only, not for positions after proposals."""
        if not seqs or not self.wants(len(seqs)):
            return {}
        eligible: list[Sequence] = []
        rooms: list[int] = []
        for seq in seqs:
            params = seq.params
            if params.structured_outputs is not None:
                continue
            tokens_left = (params.max_tokens or max_model_len) - seq.num_output_tokens
            room = min(self.step_tokens(), budget, tokens_left - 1, max_model_len - seq.num_tokens - 1)
            if room > 0:
                eligible.append(seq)
                rooms.append(room)
                budget -= room
        proposer = self.proposer
        if isinstance(proposer, BatchProposer):
            drafts = proposer.propose_batch(eligible, rooms) if eligible else []
        else:
            drafts = [proposer.propose(seq, room) for seq, room in zip(eligible, rooms)]
        proposals = {seq.seq_id: draft for seq, draft in zip(eligible, drafts) if draft}
        self._num_eligible = len(seqs)
        if not proposals:
            self._observe(0.0)
        return proposals

    def release(self, seq: Sequence) -> None:
        """`seq` finished or was preempted: a proposer's state for it goes."""
        if isinstance(self.proposer, BatchProposer):
            self.proposer.release(seq)

    def step_tokens(self) -> int:
        """k for this step: `num_tokens`, or adaptively one more than the usual accepted length."""
        if not self.adaptive:
            return self.num_tokens
        return max(1, min(self.num_tokens, round(self.accepted_length) + 1))

    def record(self, num_drafts: int, num_accepted: int) -> None:
        """The outcome of the step that verified the last proposals: `num_drafts` sequences proposed,
        `num_accepted` of their tokens were accepted."""
        if self.adaptive and num_drafts:
            self.accepted_length += SMOOTHING * (num_accepted / num_drafts - self.accepted_length)
        self._observe(num_accepted / max(self._num_eligible, 1))

    def tick(self) -> None:
        """One engine step has passed (pauses are counted in steps)."""
        self._clock += 1

    def _observe(self, gain: float) -> None:
        if not self.adaptive:
            return
        self.gain += SMOOTHING * (gain - self.gain)
        if self.gain < MIN_GAIN:
            self._paused_until = self._clock + self._pause
            self._pause = min(2 * self._pause, MAX_PAUSE)
            self.gain = MIN_GAIN  # after the pause, one probe decides
        elif gain >= MIN_GAIN:
            self._pause = MIN_PAUSE


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
