"""Sequences and model steps without a model, for exact unit tests of the scheduler and block manager."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from tokenmill.engine.scheduler import ScheduledBatch, Scheduler
from tokenmill.engine.sequence import Sequence
from tokenmill.sampling_params import SamplingParams

SAMPLED = 7  # the token every fake step samples


_fresh_tokens = itertools.count(1000)


def make_seq(prompt: list[int] | int, request_id: str = "r", **params: Any) -> Sequence:
    """A sequence over `prompt`, or over that many tokens no other sequence has (so no prefix is
    shared by accident); `params` are SamplingParams'."""
    token_ids = [next(_fresh_tokens) for _ in range(prompt)] if isinstance(prompt, int) else prompt
    return Sequence(request_id, 0, token_ids, SamplingParams(**params), torch.device("cpu"))


def run_step(scheduler: Scheduler, batch: ScheduledBatch) -> None:
    """What the engine does with a batch: its tokens enter the cache, and every sequence whose known
    tokens are now all computed samples one more (SAMPLED)."""
    scheduler.commit(batch)
    for seq in batch.seqs:
        if seq.num_computed_tokens == seq.num_tokens:
            seq.append_token(SAMPLED)


def step(scheduler: Scheduler) -> list[tuple[Sequence, int]]:
    """Schedule and run one step; returns (sequence, tokens it ran) in batch order."""
    batch = scheduler.schedule()
    run_step(scheduler, batch)
    return list(zip(batch.seqs, batch.num_new_tokens))
