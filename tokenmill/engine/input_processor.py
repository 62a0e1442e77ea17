"""Admission: a caller's prompt and sampling settings become a request the engine can always serve.

Everything a request carries that the model step will index with is checked here, before the request
exists anywhere: a token id outside the vocabulary that reached the sampler would fail the whole batch's
step. Every error is a ValueError whose message starts with the offending field's name (the server
turns that into a 400 naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer

Prompt = str | list[int]


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt: str | None  # the text, when the caller gave text
    prompt_token_ids: list[int]
    params: SamplingParams


class InputProcessor:
    def __init__(
        self, tokenizer: Tokenizer, vocab_size: int, max_model_len: int, eos_token_ids: tuple[int, ...] = ()
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.eos_token_ids = eos_token_ids

    def process(self, request_id: str, prompt: Prompt, params: SamplingParams) -> EngineRequest:
        """Tokenize and validate; raises ValueError naming the field if the request can never be served."""
        text, token_ids = self._tokenize(prompt)
        if not token_ids:
            raise ValueError("prompt must not be empty")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(
                f"prompt is {len(token_ids)} tokens; the limit is {self.max_model_len - 1} "
                f"(max_model_len {self.max_model_len} includes at least one generated token)"
            )
        self._check_token_ids("prompt token ids", token_ids)
        self._check_token_ids("stop_token_ids", params.stop_token_ids or [])
        self._check_early_stop_ban(params)
        return EngineRequest(request_id, text, token_ids, params)

    def _tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"prompt is not valid Unicode text: {exc.reason} at {exc.start}") from None
            return prompt, self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return None, list(prompt)
        raise ValueError("prompt must be a string or a list of token ids")

    def _check_early_stop_ban(self, params: SamplingParams) -> None:
        """Until `min_tokens` are out the sampler bans the stop token ids, and EOS unless `ignore_eos`;
        a ban of the whole vocabulary would leave it nothing to draw."""
        if params.min_tokens == 0:
            return
        banned = set(params.stop_token_ids or ())
        if not params.ignore_eos:
            banned.update(self.eos_token_ids)
        if len(banned) >= self.vocab_size:
            raise ValueError(
                f"stop_token_ids (with EOS unless ignore_eos) cover all {self.vocab_size} tokens of this "
                f"model's vocabulary, so no token could be sampled before min_tokens ({params.min_tokens}) "
                "are out"
            )

    def _check_token_ids(self, field: str, token_ids: list[int]) -> None:
        outside = [t for t in token_ids if not 0 <= t < self.vocab_size]
        if outside:
            raise ValueError(
                f"{field} must lie in [0, {self.vocab_size}) (this model's vocabulary); got {outside[0]}"
            )
