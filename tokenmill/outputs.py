"""What the engine hands back to callers: one `RequestOutput` per request per update."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompletionOutput:
    """One generated sequence. `text` is cumulative; `delta_text`/`delta_token_ids` are new since the
    previous update of this request (what a streaming client sends on)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token that ended it
    delta_text: str = ""
    delta_token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] | None = None  # per output token: itself and the top alternatives
    token_times: list[float] = field(default_factory=list)  # monotonic time each token was generated

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestTimes:
    """Monotonic timestamps (time.monotonic) of a request's life, for latency metrics."""

    arrival: float
    first_scheduled: float | None = None
    first_token: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0
    times: RequestTimes | None = None
