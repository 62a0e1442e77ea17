"""Request bodies of the two contracts that are not OpenAI's: FastDeploy's and the judge's `/predict`.

A FastDeploy body may arrive on the OpenAI chat route, so `ChatBody`, which tells the two apart by the
fields only FastDeploy has, lives here beside the FastDeploy body it picks.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import Discriminator, Field, StrictBool, StrictStr, Tag, field_validator

from tokenmill.server.openai_requests import ChatCompletionRequest, ChatMessage
from tokenmill.server.request_fields import (
    Penalty,
    PositiveInt,
    RequestBody,
    Seed,
    StopStrings,
    Temperature,
    Text,
    TopK,
    require_unicode,
    unicode_problem,
)

logger = logging.getLogger(__name__)


class FastDeployRequest(RequestBody):
    """FastDeploy's request (seed 003): `text` or `messages`, with its own names for the sampling knobs.
    `model` names a LoRA adapter (or the base model) as on the OpenAI routes; FastDeploy's seed has no
    field of its own for it."""

    text: Text | None = None
    model: Text | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    req_id: Text | None = Field(default=None, min_length=1, max_length=256)
    max_dec_len: PositiveInt | None = None
    min_dec_len: PositiveInt = 1
    topp: Annotated[float, Field(gt=0, le=1, strict=True)] = 0.7
    temperature: Annotated[float, Field(gt=0, le=100, strict=True)] = 0.95
    penalty_score: Annotated[float, Field(gt=0, le=10, strict=True)] = 1.0
    frequency_score: Penalty = 0.0
    presence_score: Penalty = 0.0
    stream: StrictBool = False
    timeout: Annotated[float, Field(gt=0, le=3600, strict=True)] | None = None
    return_usage: StrictBool = False
    seed: Seed | None = None


FASTDEPLOY_ONLY_FIELDS = frozenset(
    {
        "text",
        "req_id",
        "max_dec_len",
        "min_dec_len",
        "topp",
        "penalty_score",
        "frequency_score",
        "presence_score",
        "return_usage",
        "timeout",
    }
)


def _chat_dialect(body: Any) -> str:
    if isinstance(body, dict) and FASTDEPLOY_ONLY_FIELDS & body.keys():
        return "fastdeploy"
    return "openai"


ChatBody = Annotated[
    Annotated[ChatCompletionRequest, Tag("openai")] | Annotated[FastDeployRequest, Tag("fastdeploy")],
    Discriminator(_chat_dialect),
]


class PredictRequest(RequestBody):
    """The judge's request: one prompt or a batch, plus optional overrides of the server's defaults.

    A single prompt that is not valid Unicode is a 400; in a batch such an item becomes "" (answered
    with "", like any empty question) so that the other items are still answered."""

    prompt: StrictStr | Annotated[list[StrictStr], Field(max_length=100_000)]
    max_new_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1, strict=True)] | None = None
    top_k: TopK | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10, strict=True)] | None = None
    stop: StopStrings | None = None
    system_prompt: Text | None = None
    lora: Text | None = None  # a LoRA adapter's name, or the base model's (default: --default-lora)

    @field_validator("prompt")
    @classmethod
    def _blank_invalid_batch_items(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, str):
            return require_unicode(prompt)
        checked = []
        for index, question in enumerate(prompt):
            problem = unicode_problem(question)
            if problem:
                logger.warning(
                    "prompt[%d] is not valid Unicode text (%s); its answer is empty", index, problem
                )
            checked.append("" if problem else question)
        return checked
