"""Verification of proposed tokens against the target model's distributions.

A sequence with k proposals d_1..d_k contributes k + 1 logit rows: row j is the target's distribution of
the token after d_1..d_j. Going down the rows, a proposal is accepted with probability p_target(d_j)
(greedy: iff it is the argmax), and the first rejection emits instead a token drawn from p_target with
d_j removed (greedy: the argmax); if all k are accepted, row k adds one more token from p_target. With a
proposer that puts all its mass on its guess (n-gram), this is standard speculative sampling with
p_draft one-hot, so every emitted token is distributed exactly as sampling the target token by token.

Every sampling rule (early-stop bans, penalties, temperature, top-k/p, min-p, seeds) is applied to each
row as the plain sampler would apply it with the row's preceding proposals already appended.
"""

from __future__ import annotations

import torch

from tokenmill.engine.sampler import Sampler
from tokenmill.engine.sequence import Sequence
from tokenmill.sampling_params import SamplingParams

NO_TOKEN = -1  # rows after a sequence's first rejection emit nothing


class DraftContext:
    """What the sampling rules read of a sequence, as if its first proposals were already appended; the
    sampler takes it where it takes a Sequence (it reads only these attributes)."""

    __slots__ = ("generator", "num_output_tokens", "output_token_ids", "params", "prompt_token_ids", "seq_id")

    def __init__(self, seq: Sequence, accepted: list[int]) -> None:
        self.seq_id = seq.seq_id
        self.params: SamplingParams = seq.params
        self.generator = seq.generator
        self.prompt_token_ids = seq.prompt_token_ids
        self.output_token_ids = seq.output_token_ids + accepted
        self.num_output_tokens = len(self.output_token_ids)


VerifyRow = Sequence | DraftContext


def verify_rows(seqs: list[Sequence], proposals: list[list[int]]) -> list[VerifyRow]:
    """The sequence each logit row is sampled as: itself, or its `DraftContext` where a rule depends
    on the tokens before the row (penalties, min_tokens still pending)."""
    rows: list[VerifyRow] = []
    for seq, draft in zip(seqs, proposals):
        params = seq.params
        if params.uses_penalties or seq.num_output_tokens < params.min_tokens:
            rows += [seq] + [DraftContext(seq, draft[:j]) for j in range(1, len(draft) + 1)]
        else:
            rows += [seq] * (len(draft) + 1)
    return rows


class RejectionSampler:
    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def __call__(
        self, logits: torch.Tensor, seqs: list[Sequence], proposals: list[list[int]]
    ) -> torch.Tensor:
        """logits: [sum(len(d) + 1 for d in proposals), vocab], each sequence's rows in order.
        Returns a token per row: the one the row emits if every proposal before it was accepted (the
        proposal itself where accepted, else the target's token), NO_TOKEN after a sampled rejection.
        `emitted_tokens` ends each sequence's run at its first row that is not its proposal, so a
        greedy batch needs only the target's argmax on the device: no proposals uploaded, no sync."""
        rows = verify_rows(seqs, proposals)
        logits = self.sampler.adjust(logits, rows)
        target = logits.argmax(dim=-1)
        if all(row.params.greedy for row in rows):
            return target
        device = logits.device
        draft_list: list[int] = []
        first_rows: list[int] = []
        for draft in proposals:
            first_rows += [len(draft_list)] * (len(draft) + 1)
            draft_list += [*draft, NO_TOKEN]
        draft = _upload(draft_list, device)
        has_draft = draft != NO_TOKEN
        accept, correction = self._sample_rows(logits, rows, draft, has_draft, target)
        token = torch.where(accept, draft, correction)
        rejected = (~accept).long()
        rejected_before = rejected.cumsum(0) - rejected
        emitted = rejected_before == rejected_before[_upload(first_rows, device)]
        return torch.where(emitted, token, NO_TOKEN)

    def _sample_rows(
        self,
        logits: torch.Tensor,
        rows: list[VerifyRow],
        draft: torch.Tensor,
        has_draft: torch.Tensor,
        target: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Acceptance and replacement tokens of rows where some sample (greedy rows use `target`)."""
        probs = self.sampler.target_probs(logits, rows)
        index = draft.clamp(min=0)[:, None]
        p_draft = probs.gather(1, index)[:, 0]
        accept_sampled = has_draft & (self._uniforms(rows, probs.device) < p_draft)
        residual = probs.scatter(1, index, torch.where(has_draft, 0.0, p_draft)[:, None])
        # A rejected draft that held (to rounding) all of the mass leaves nothing: draw from p itself.
        residual = torch.where(residual.sum(dim=-1, keepdim=True) > 0, residual, probs)
        sampled = self.sampler.draw(residual, rows)
        greedy = _upload([row.params.greedy for row in rows], logits.device)
        accept = torch.where(greedy, draft == target, accept_sampled)
        return accept, torch.where(greedy, target, sampled)

    def _uniforms(self, rows: list[VerifyRow], device: torch.device) -> torch.Tensor:
        uniforms = torch.rand(len(rows), generator=self.sampler.generator, device=device)
        for i, row in enumerate(rows):
            if row.generator is not None:
                uniforms[i] = torch.rand(1, generator=row.generator, device=device)[0]
        return uniforms


def emitted_tokens(
    seqs: list[Sequence], proposals: list[list[int]], tokens: list[int]
) -> tuple[list[tuple[Sequence, int]], list[int]]:
    """The (sequence, token) pairs a verified step emits, in order, and the logit row of each: each
    sequence's rows up to and including the first whose token is not its proposal (the target's own)."""
    pairs: list[tuple[Sequence, int]] = []
    rows: list[int] = []
    start = 0
    for seq, draft in zip(seqs, proposals):
        for row, proposed in zip(range(start, start + len(draft) + 1), [*draft, NO_TOKEN]):
            token = tokens[row]
            if token == NO_TOKEN:
                break
            pairs.append((seq, token))
            rows.append(row)
            if token != proposed:
                break
        start += len(draft) + 1
    return pairs, rows


def _upload(values: list, device: torch.device) -> torch.Tensor:
    """A small host list on the device without waiting for the device (a plain `torch.tensor(...,
    device=...)` synchronizes the stream, which would stall the host until the forward pass is done)."""
    return torch.tensor(values).to(device, non_blocking=True)
