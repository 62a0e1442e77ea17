"""One generated sequence: its tokens, the KV blocks holding them, and how far the model has computed it."""

from __future__ import annotations

import enum
import itertools
import math
import time
from typing import TYPE_CHECKING

import torch

from tokenmill.sampling_params import SamplingParams

if TYPE_CHECKING:
    from tokenmill.lora.adapter import LoRAAdapter

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(
        self,
        request_id: str,
        index: int,
        prompt_token_ids: list[int],
        params: SamplingParams,
        device: torch.device,
    ) -> None:
        self.seq_id = next(_ids)
        self.request_id = request_id
        self.index = index
        self.params = params
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache at first admission
        self.block_ids: list[int] = []
        self.block_generation = 0  # bumped when the blocks are freed, so cached copies of the table expire
        self.block_hashes: list[int] = []  # hashes of the leading full blocks, a chain
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.logprobs: list[dict[int, float]] | None = [] if params.logprobs is not None else None
        self.generator: torch.Generator | None = None
        self.lora: LoRAAdapter | None = None  # the adapter it runs under (None: the base model)
        self.lora_slot = -1  # that adapter's resident slot, given at admission (tokenmill.lora.manager)
        self.proposer_state: object | None = None  # what a speculative proposer keeps per sequence
        self.arrival_time = time.monotonic()
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.token_times: list[float] = []  # when each output token was appended, for latency metrics
        # Sampling reads the known tokens always with penalties or logprobs, and until min_tokens are
        # out (EOS is banned); a step may be launched before this sequence's newest token is known only
        # once it has this many tokens. (A grammar's mask also follows the newest token, but the engine
        # samples such a step only once that token is known, so grammars do not hold steps back.)
        needs_known_tokens = params.uses_penalties or params.logprobs is not None
        self.runs_ahead_from = math.inf if needs_known_tokens else self.num_prompt_tokens + params.min_tokens
        if params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(params.seed + index)

    def append_token(self, token_id: int, now: float | None = None) -> None:
        """Append a sampled token; `now` (time.monotonic) lets a step stamp all its tokens with one read."""
        self.token_ids.append(token_id)
        now = time.monotonic() if now is None else now
        self.token_times.append(now)
        if self.first_token_time is None:
            self.first_token_time = now

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
