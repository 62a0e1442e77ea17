"""Proposers: guesses of a sequence's next tokens, made on the host from what is already known."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Proposer(Protocol):
    def propose(self, token_ids: list[int], max_tokens: int) -> list[int]:
        """Up to `max_tokens` guesses of the tokens that follow `token_ids` (possibly none)."""
        ...


class NgramProposer:
    """Prompt lookup: find the longest suffix of the sequence (between `min_n` and `max_n` tokens) that
    also occurs earlier in it, and propose the tokens that followed that earlier occurrence: the latest
    one with `max_tokens` tokens after it, else the earliest (a loop's latest turn is cut short).
    Copying, editing and quoting reuse long runs of the prompt, which this catches for free.

    One pass over the sequence in numpy: for every earlier end position, the length of the common
    suffix (up to `max_n`) is a running product of per-offset equalities."""

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n = min_n
        self.max_n = max_n

    def propose(self, token_ids: list[int], max_tokens: int) -> list[int]:
        length = len(token_ids)
        if max_tokens <= 0 or length <= self.min_n:
            return []
        tokens = np.fromiter(token_ids, dtype=np.int64, count=length)
        # ends[e] is the end (exclusive) of a candidate earlier occurrence: e in [min_n, length - 1], so
        # at least one token follows it. matched[e] counts how many of the suffix's tokens it matches.
        ends = np.arange(self.min_n, length)
        matched = np.zeros(len(ends), dtype=np.int64)
        alive = np.ones(len(ends), dtype=bool)
        for offset in range(1, min(self.max_n, length - 1) + 1):
            reachable = ends - offset >= 0
            alive &= reachable & (tokens[np.maximum(ends - offset, 0)] == tokens[length - offset])
            matched += alive
            if not alive.any():
                break
        best = matched.max(initial=0)
        if best < self.min_n:
            return []
        candidates = ends[matched == best]
        with_room = candidates[candidates <= length - max_tokens]
        end = int(with_room[-1] if len(with_room) else candidates[0])
        return token_ids[end : end + max_tokens]
