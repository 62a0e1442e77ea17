"""A bench-only proposer: the target's own greedy tokens, each kept with a chosen probability.

Random-weight models accept nothing from real proposers, so speculation's speed-up as a function of the
acceptance rate is drawn with this stand-in: it replays a reference greedy run of the same requests and
replaces each proposed token by a wrong one with probability 1 - `acceptance` (seeded). The reference is
recorded through verify steps (`Replay`), which round as the replay's own steps do. Results with it must
be labelled as such; it is not a way to generate text.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from tokenmill.bench.offline import greedy_params, output_digest

if TYPE_CHECKING:
    from tokenmill.engine.llm import LLM
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


class FillerProposer:
    """Proposes `max_tokens` copies of one token every step, so that every step verifies a full chunk:
    a replay's reference is recorded through the same verify steps it will be replayed through."""

    def __init__(self, token: int = 0) -> None:
        self.token = token

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        return [self.token] * max_tokens


class Replay:
    """Installs a ReplayProposer over the engine's own greedy text of the requests, recorded (untimed)
    through a speculative pass: a FillerProposer proposes k tokens every step, so every token is
    computed by a verify step as in the replays. Under bf16, plain decoding and verify steps round
    differently (the fused GEMVs tile one row apart from several), so text recorded without speculation
    would stop matching the replay after the first near-tie and the measured acceptance would collapse.
    The recording is the second of two such passes: a prompt's prefill rounds differently once the
    prefix cache serves all but its last few tokens (a short chunk, not the whole prompt, goes through
    the GEMMs), and every timed run finds the cache as the first pass leaves it. `recording` keeps the
    recorded text's digest, to check the replay emitted the same."""

    def __init__(self, acceptance: float) -> None:
        self.acceptance = acceptance
        self.recording = ""

    def __call__(self, llm: LLM, requests: list[tuple[list[int], int]]) -> None:
        speculator = llm.engine.speculator
        assert speculator is not None and not speculator.adaptive, "replay points speculate every step"
        speculator.proposer = FillerProposer()
        prompts, params = [p for p, _ in requests], greedy_params(requests)
        llm.generate(prompts, params, use_tqdm=False)  # leaves the prompts' blocks in the prefix cache
        outputs = llm.generate(prompts, params, use_tqdm=False)
        self.recording = output_digest([o.outputs[0].token_ids for o in outputs])
        references = [o.prompt_token_ids + o.outputs[0].token_ids for o in outputs]
        vocab_size = llm.engine.model_config.vocab_size
        speculator.proposer = ReplayProposer(references, self.acceptance, vocab_size)

    def expected_rate(self, k: int) -> float:
        """Accepted / proposed tokens for drafts of k tokens, each kept with probability `acceptance`:
        a draft is accepted up to its first wrong token."""
        return sum(self.acceptance**i for i in range(1, k + 1)) / k
