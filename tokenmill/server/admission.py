"""What a request may ask for, and whether it gets in: size limits, the waiting queue, 429s.

Every check here is cheap (lengths and counts), so it runs on the event loop before any tokenization.
"""

from __future__ import annotations

from typing import Any

from tokenmill.config import ServerConfig
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.errors import APIError, bad_request_from_value_error
from tokenmill.server.lifecycle import EngineLifecycle


class Ticket:
    """A request's place in the admission queue, given back once its first token exists."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission
        self._waiting = True
        admission.num_waiting_requests += 1
        admission.num_in_flight += 1

    def started(self) -> None:
        if self._waiting and self._admission is not None:
            self._waiting = False
            self._admission.num_waiting_requests -= 1

    def close(self) -> None:
        if self._admission is not None:
            self.started()
            self._admission.num_in_flight -= 1
            self._admission = None

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Admission:
    def __init__(self, config: ServerConfig, lifecycle: EngineLifecycle) -> None:
        self.config = config
        self.lifecycle = lifecycle
        self.num_waiting_requests = 0
        self.num_in_flight = 0

    def admit(self) -> Ticket:
        self.lifecycle.serving_engine()
        if self.num_waiting_requests >= self.config.max_queued_requests:
            raise APIError(
                429,
                f"{self.num_waiting_requests} requests are already waiting "
                f"(limit {self.config.max_queued_requests}, MAX_CACHED_TASK_NUM); retry later",
            )
        return Ticket(self)

    def check_model(self, model: str | None, param: str = "model") -> str | None:
        """The LoRA adapter that `model` names (None: the base model); a 404 naming `param` for any
        other name. A request naming no model runs under --default-lora."""
        name = self.lifecycle.model_name
        if model is None:
            return self.config.default_lora
        if model == name:
            return None
        adapters = self.lora_adapters()
        if model in adapters:
            return model
        served = ", ".join(repr(n) for n in [name, *adapters])
        raise APIError(404, f"{param} {model!r} does not exist; this server serves {served}", param)

    def lora_adapters(self) -> list[str]:
        """Names of the LoRA adapters loaded now (read from the event loop; the engine thread adds)."""
        engine = self.lifecycle.engine
        lora = engine.engine.lora if engine is not None else None
        return [] if lora is None else list(lora.adapters)

    @property
    def max_model_len(self) -> int:
        return self.lifecycle.running_engine().engine.max_model_len

    @property
    def max_prompt_tokens(self) -> int:
        limit = self.max_model_len - 1
        return min(limit, self.config.max_input_tokens) if self.config.max_input_tokens else limit

    def check_sequence_count(self, num_prompts: int, n: int = 1, param: str = "prompt") -> None:
        """--max-prompts-per-request caps the sequences a request creates, `n` for each prompt: a 400
        naming `param` when the prompts alone exceed it, else naming `n`."""
        limit = self.config.max_prompts_per_request
        if num_prompts > limit:
            raise APIError(
                400, f"{param} holds {num_prompts} prompts; at most {limit} are accepted per request", param
            )
        if num_prompts * n > limit:
            prompts = f"{num_prompts} prompt{'s' if num_prompts > 1 else ''}"
            raise APIError(
                400,
                f"n is {n} for {prompts}: {num_prompts * n} sequences; at most {limit} are accepted "
                "per request (each prompt counts n times)",
                "n",
            )

    def check_prompt_length(self, token_ids: list[int], param: str = "prompt") -> None:
        if len(token_ids) > self.max_prompt_tokens:
            raise APIError(
                400,
                f"{param} is {len(token_ids)} tokens; at most {self.max_prompt_tokens} are accepted",
                param,
            )

    def check_max_tokens(self, max_tokens: int | None, param: str = "max_tokens") -> None:
        limit = self.config.max_dec_len
        if max_tokens is not None and limit is not None and max_tokens > limit:
            raise APIError(400, f"{param} is {max_tokens}; at most {limit} (MAX_DEC_LEN) is allowed", param)

    def resolve_max_tokens(self, requested: int | None, prompt_len: int, param: str) -> int:
        """The request's output limit: what it asked for if that fits, else a 400 naming `param`;
        by default whatever room the context leaves, capped by MAX_DEC_LEN."""
        self.check_max_tokens(requested, param)
        room = self.max_model_len - prompt_len
        if requested is None:
            return min(room, self.config.max_dec_len or room)
        if requested > room:
            raise APIError(
                400,
                f"{param} is {requested} but the prompt ({prompt_len} tokens) leaves room for {room} "
                f"in this model's {prompt_len + room}-token context",
                param,
            )
        return requested

    @staticmethod
    def sampling_params(**fields: Any) -> SamplingParams:
        try:
            return SamplingParams(**{k: v for k, v in fields.items() if v is not None})
        except ValueError as exc:
            raise bad_request_from_value_error(exc) from exc
