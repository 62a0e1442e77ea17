"""What a speculative step is worth: the tokens k proposals are expected to yield at the measured
acceptance, against the measured time of a verify step of k relative to a plain decode step at the same
batch size.

With each proposal accepted with probability a (until the first rejection), a verify step of k proposals
emits E(k) = 1 + a + ... + a^k tokens per sequence where a decode step emits 1, so it pays iff
E(k) > time(verify, k) / time(decode). Both times are moving averages of the engine's own steps, per
batch-size bucket (the next power of two: graphs pad to such sizes); until a ratio is measured it is
assumed to grow by `PRIOR_COST_PER_TOKEN` per proposal, which makes long drafts wait for good acceptance.
A proposer that always proposes (a draft model) leaves no plain decode step to time, so one is asked for
when a bucket's decode time is older than `RECALIBRATE_STEPS` recorded steps.
"""

from __future__ import annotations

PRIOR_COST_PER_TOKEN = 0.125  # assumed verify/decode time ratio: 1 + this per proposed token
SMOOTHING = 0.2  # weight of the newest step in the moving averages
RECALIBRATE_STEPS = 256  # recorded steps after which a bucket's decode time is measured again


def expected_tokens(k: int, acceptance: float) -> float:
    """Tokens per sequence a verify step of k proposals emits: the accepted run plus the target's own."""
    return sum(acceptance**i for i in range(k + 1))


def batch_bucket(num_seqs: int) -> int:
    return 1 << max(num_seqs - 1, 0).bit_length()


class StepCosts:
    def __init__(self) -> None:
        self._seconds: dict[tuple[int, int], float] = {}  # (bucket, k) -> moving average; k = 0: decode
        self._num_records = 0
        self._decode_timed_at: dict[int, int] = {}  # bucket -> _num_records when a decode step was timed

    def record(self, num_seqs: int, k: int, seconds: float) -> None:
        """A step of `num_seqs` sequences with at most `k` proposals each (0: a decode step) took this."""
        key = (batch_bucket(num_seqs), k)
        old = self._seconds.get(key)
        self._seconds[key] = seconds if old is None else old + SMOOTHING * (seconds - old)
        self._num_records += 1
        if k == 0:
            self._decode_timed_at[key[0]] = self._num_records

    def needs_decode_step(self, num_seqs: int) -> bool:
        """Whether this batch size's decode time is unknown or stale (the next step should not speculate)."""
        timed_at = self._decode_timed_at.get(batch_bucket(num_seqs))
        return timed_at is None or self._num_records - timed_at > RECALIBRATE_STEPS

    def ratio(self, num_seqs: int, k: int) -> float:
        """Time of a verify step of k proposals over a decode step's, at this batch size."""
        bucket = batch_bucket(num_seqs)
        verify, decode = self._seconds.get((bucket, k)), self._seconds.get((bucket, 0))
        if verify is None or decode is None:
            return 1.0 + PRIOR_COST_PER_TOKEN * k
        return verify / decode

    def best_k(self, num_seqs: int, max_k: int, acceptance: float) -> tuple[int, float]:
        """The k in 1..max_k with the most tokens per unit of time, and its speed-up over decoding."""
        return max(
            ((k, expected_tokens(k, acceptance) / self.ratio(num_seqs, k)) for k in range(1, max_k + 1)),
            key=lambda item: item[1],
        )
