"""A bench-only proposer: the target's own greedy tokens, each kept with a chosen probability.

Random-weight models accept nothing from real proposers, so speculation's speed-up as a function of the
acceptance rate is drawn with this stand-in: it replays a reference greedy run of the same requests and
replaces each proposed token by a wrong one with probability 1 - `acceptance` (seeded). Results with it
must be labelled as such; it is not a way to generate text.
"""

from __future__ import annotations

import random

from tokenmill.engine.sequence import Sequence


class ReplayProposer:
    def __init__(self, references: list[list[int]], acceptance: float, vocab_size: int, seed: int = 0):
        """`references`: prompt + greedy output of each request (any order)."""
        self.references = {tuple(ref[:8]): [] for ref in references}
        for reference in references:
            self.references[tuple(reference[:8])].append(reference)
        self.acceptance = acceptance
        self.vocab_size = vocab_size
        self.rng = random.Random(seed)

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        token_ids = seq.token_ids
        for reference in self.references.get(tuple(token_ids[:8]), []):
            if reference[: len(token_ids)] == token_ids:
                draft = reference[len(token_ids) : len(token_ids) + max_tokens]
                return [self._maybe_wrong(token) for token in draft]
        return []

    def _maybe_wrong(self, token: int) -> int:
        if self.rng.random() < self.acceptance:
            return token
        return (token + 1 + self.rng.randrange(self.vocab_size - 1)) % self.vocab_size
