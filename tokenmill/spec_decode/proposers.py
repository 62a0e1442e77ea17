"""Proposers: guesses of a sequence's next tokens, made on the host from what is already known."""

from __future__ import annotations

from bisect import bisect_right
from typing import Protocol, runtime_checkable

from tokenmill.engine.sequence import Sequence


class Proposer(Protocol):
    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        """Up to `max_tokens` guesses of the tokens that follow `seq`'s tokens (possibly none)."""
        ...


@runtime_checkable
class BatchProposer(Protocol):
    """A proposer that guesses for the whole batch at once (a draft model runs one batched pass per
    guessed position) and keeps state per sequence that must be dropped when the sequence leaves."""

    def propose_batch(self, seqs: list[Sequence], max_tokens: list[int]) -> list[list[int]]:
        """Up to `max_tokens[i]` guesses of the tokens that follow `seqs[i]`'s tokens."""
        ...

    def release(self, seq: Sequence) -> None:
        """`seq` finished or was preempted."""
        ...


class NgramIndex:
    """Where every n-gram of a sequence (min_n <= n <= max_n tokens) occurs, by its end, kept up to date
    as the sequence grows: a step indexes only the tokens it appended (token ids are append-only), and
    a lookup is one dictionary probe per n instead of a scan of the whole context. The price is paid
    once, at a sequence's first proposal: indexing its prompt costs ~7 µs and three dictionary entries
    per token (0.2 s and ~20 MB for 32k tokens, CPU)."""

    def __init__(self, min_n: int, max_n: int) -> None:
        self.bounds = (min_n, max_n)
        self.sizes = range(max_n, min_n - 1, -1)  # longest first: the longest match wins
        self._ends: dict[tuple[int, ...], list[int]] = {}  # n-gram -> (exclusive) ends, ascending
        self._indexed = 1  # occurrences ending before this are indexed

    def update(self, tokens: list[int]) -> None:
        """Index the occurrences that end before one of `tokens` (so that a token follows them)."""
        length, ends = len(tokens), self._ends
        for n in self.sizes:
            for end in range(max(self._indexed, n), length):
                gram = tuple(tokens[end - n : end])
                found = ends.get(gram)
                if found is None:
                    ends[gram] = [end]
                else:
                    found.append(end)
        self._indexed = max(self._indexed, length)

    def lookup(self, tokens: list[int], max_tokens: int) -> list[int]:
        """The proposal for `tokens` (indexed up to their end): what followed the longest earlier
        occurrence of their suffix, its latest occurrence with `max_tokens` tokens after it, else its
        earliest."""
        length = len(tokens)
        if max_tokens <= 0:
            return []
        for n in self.sizes:
            ends = self._ends.get(tuple(tokens[length - n :])) if n < length else None
            if ends:
                latest_with_room = bisect_right(ends, length - max_tokens)
                end = ends[latest_with_room - 1] if latest_with_room else ends[0]
                return tokens[end : end + max_tokens]
        return []


class NgramProposer:
    """Prompt lookup: find the longest suffix of the sequence (between `min_n` and `max_n` tokens) that
    also occurs earlier in it, and propose the tokens that followed that earlier occurrence: the latest
    one with `max_tokens` tokens after it, else the earliest (a loop's latest turn is cut short).
    Copying, editing and quoting reuse long runs of the prompt, which this catches for free.

    Each sequence keeps an `NgramIndex` of its tokens, so a step's lookup costs a few dictionary
    operations per appended token, whatever the context's length."""

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n = min_n
        self.max_n = max_n

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        index = seq.proposer_state
        if not isinstance(index, NgramIndex) or index.bounds != (self.min_n, self.max_n):
            index = seq.proposer_state = NgramIndex(self.min_n, self.max_n)
        tokens = seq.token_ids
        index.update(tokens)
        return index.lookup(tokens, max_tokens)
