"""Proposers: guesses of a sequence's next tokens, made on the host from what is already known."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

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


class TokenArray:
    """An append-only numpy copy of a sequence's token ids, so each step converts only the new tokens."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, dtype=np.int64)
        self._length = 0

    def sync(self, token_ids: list[int]) -> np.ndarray:
        length = len(token_ids)
        if length > len(self._buffer):
            grown = np.empty(max(2 * len(self._buffer), length, 256), dtype=np.int64)
            grown[: self._length] = self._buffer[: self._length]
            self._buffer = grown
        if length > self._length:
            self._buffer[self._length : length] = token_ids[self._length :]
            self._length = length
        return self._buffer[:length]


class NgramProposer:
    """Prompt lookup: find the longest suffix of the sequence (between `min_n` and `max_n` tokens) that
    also occurs earlier in it, and propose the tokens that followed that earlier occurrence: the latest
    one with `max_tokens` tokens after it, else the earliest (a loop's latest turn is cut short).
    Copying, editing and quoting reuse long runs of the prompt, which this catches for free.

    One numpy comparison over the sequence finds the earlier occurrences of the last token; the match
    is then extended backwards only at those."""

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n = min_n
        self.max_n = max_n

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        if not isinstance(seq.proposer_state, TokenArray):
            seq.proposer_state = TokenArray()
        return self.lookup(seq.proposer_state.sync(seq.token_ids), max_tokens)

    def lookup(self, tokens: np.ndarray, max_tokens: int) -> list[int]:
        """The proposal for a sequence of `tokens`."""
        length = len(tokens)
        if max_tokens <= 0 or length <= self.min_n:
            return []
        # ends: (exclusive) ends of earlier occurrences of the suffix, at most length - 1 so that a
        # token follows; matched: how many of the suffix's last tokens each occurrence shares.
        ends = np.flatnonzero(tokens[: length - 1] == tokens[length - 1]) + 1
        matched = np.ones(len(ends), dtype=np.int64)
        alive = np.ones(len(ends), dtype=bool)
        for offset in range(2, self.max_n + 1):
            starts = ends - offset
            alive &= (starts >= 0) & (tokens[np.maximum(starts, 0)] == tokens[length - offset])
            if not alive.any():
                break
            matched += alive
        best = matched.max(initial=0)
        if best < self.min_n:
            return []
        candidates = ends[matched == best]
        with_room = candidates[candidates <= length - max_tokens]
        end = int(with_room[-1] if len(with_room) else candidates[0])
        return tokens[end : end + max_tokens].tolist()
