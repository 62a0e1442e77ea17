"""Per-request decoding settings, validated up front so a bad value never reaches the engine loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenmill.structured_output.params import StructuredOutputsParams

# Temperatures below this decode greedily (vLLM's _SAMPLING_EPS): logits divided by a temperature near
# float32's smallest normal overflow to infinities, and their softmax is NaN.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass
class SamplingParams:
    """How one request is decoded. Field names and defaults follow vLLM's `SamplingParams`.

    `temperature=0` (or below `GREEDY_BELOW_TEMPERATURE`) means greedy. `top_k` of 0 or -1 disables
    top-k. Penalties of 1.0 (repetition) or 0.0 (presence, frequency) are off. Stop strings are matched
    on the decoded text and never appear in the output. `structured_outputs` constrains the output to a
    JSON schema, a regex, a choice or a grammar (a `StructuredOutputsParams`, or a dict of its fields).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    logprobs: int | None = None  # also return this many most likely alternatives per token
    structured_outputs: StructuredOutputsParams | None = None
    stop_strings: tuple[str, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.stop_strings = tuple(self.stop or ())
        if isinstance(self.structured_outputs, dict):
            self.structured_outputs = _structured_outputs_from(self.structured_outputs)
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        def check(ok: bool, name: str, requirement: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {requirement}, got {getattr(self, name)!r}")

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_num(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        check(is_int(self.n) and self.n >= 1, "n", "an integer >= 1")
        check(is_num(self.temperature) and self.temperature >= 0, "temperature", "a number >= 0")
        check(is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", "in (0, 1]")
        check(is_int(self.top_k) and self.top_k >= 0, "top_k", "-1, 0 (disabled) or a positive integer")
        check(is_num(self.min_p) and 0 <= self.min_p <= 1, "min_p", "in [0, 1]")
        check(
            is_num(self.repetition_penalty) and self.repetition_penalty > 0,
            "repetition_penalty",
            "a number > 0",
        )
        check(
            is_num(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
            "presence_penalty",
            "in [-2, 2]",
        )
        check(
            is_num(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
            "frequency_penalty",
            "in [-2, 2]",
        )
        check(
            self.seed is None or (is_int(self.seed) and -(2**63) <= self.seed < 2**63),
            "seed",
            "an integer in [-2**63, 2**63) or None",
        )
        check(
            self.max_tokens is None or (is_int(self.max_tokens) and self.max_tokens >= 1),
            "max_tokens",
            "an integer >= 1 or None",
        )
        check(is_int(self.min_tokens) and self.min_tokens >= 0, "min_tokens", "an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        check(
            all(isinstance(s, str) and s for s in self.stop_strings),
            "stop",
            "a non-empty string or a list of non-empty strings",
        )
        check(
            all(is_int(t) and t >= 0 for t in self.stop_token_ids),
            "stop_token_ids",
            "a list of non-negative integers",
        )

        check(
            self.logprobs is None or (is_int(self.logprobs) and 0 <= self.logprobs <= 20),
            "logprobs",
            "an integer in [0, 20] or None",
        )
        check(
            self.structured_outputs is None or isinstance(self.structured_outputs, StructuredOutputsParams),
            "structured_outputs",
            "a StructuredOutputsParams, a dict of its fields, or None",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW_TEMPERATURE

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def _structured_outputs_from(fields: dict[str, Any]) -> StructuredOutputsParams:
    try:
        return StructuredOutputsParams(**fields)
    except TypeError as exc:
        raise ValueError(f"structured_outputs: {exc}") from None
