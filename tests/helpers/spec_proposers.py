"""Proposers for tests: replay a reference run's greedy tokens, optionally with planted mistakes."""

from __future__ import annotations

import itertools

from tokenmill.engine.sequence import Sequence


class ReplayProposer:
    """Proposes the continuation a reference run produced after the same tokens. With `plant_errors`,
    call i replaces its proposal at index i % (max_tokens + 1) by a wrong token, so rejections fall at
    every position in turn (and one call in max_tokens + 1 is accepted in full)."""

    def __init__(self, references: list[list[int]], plant_errors: bool = False, vocab_size: int = 256):
        self.references = references
        self.plant_errors = plant_errors
        self.vocab_size = vocab_size
        self.calls = itertools.count()

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        token_ids = seq.token_ids
        for reference in self.references:
            if reference[: len(token_ids)] == token_ids:
                draft = reference[len(token_ids) : len(token_ids) + max_tokens]
                break
        else:
            return []
        wrong_at = next(self.calls) % (max_tokens + 1)
        if self.plant_errors and wrong_at < len(draft):
            draft[wrong_at] = (draft[wrong_at] + 1) % self.vocab_size
        return draft
