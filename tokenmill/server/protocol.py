"""Request bodies of every endpoint, strict so that a wrong type is a 400 and never a silent conversion."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, StrictStr, Tag

Temperature = Annotated[float, Field(ge=0, le=100, strict=True)]
Probability = Annotated[float, Field(ge=0, le=1, strict=True)]
Penalty = Annotated[float, Field(ge=-2, le=2, strict=True)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
TokenId = Annotated[StrictInt, Field(ge=0)]
StopStrings = StrictStr | Annotated[list[StrictStr], Field(max_length=16)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _VllmSampling(_Body):
    """Sampling fields vLLM accepts beyond the OpenAI ones."""

    top_k: StrictInt | None = Field(default=None, ge=-1)
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10, strict=True)] | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0)] = 0
    ignore_eos: StrictBool = False
    stop_token_ids: list[TokenId] | None = None
    skip_special_tokens: StrictBool = True


class StreamOptions(_Body):
    include_usage: StrictBool = False


class _OpenAISampling(_VllmSampling):
    model: StrictStr | None = None
    n: Annotated[StrictInt, Field(ge=1, le=16)] = 1
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1, strict=True)] | None = None
    stop: StopStrings | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None


class CompletionRequest(_OpenAISampling):
    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
    )
    max_tokens: PositiveInt | None = 16
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: PositiveInt | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ResponseFormat(_Body):
    type: Literal["text"]


class ChatCompletionRequest(_OpenAISampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class FastDeployRequest(_Body):
    """FastDeploy's request (seed 003): `text` or `messages`, with its own names for the sampling knobs."""

    text: StrictStr | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    req_id: StrictStr | None = Field(default=None, min_length=1, max_length=256)
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
    seed: StrictInt | None = None


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


class PredictRequest(_Body):
    """The judge's request: one prompt or a batch, plus optional overrides of the server's defaults."""

    prompt: StrictStr | Annotated[list[StrictStr], Field(max_length=100_000)]
    max_new_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1, strict=True)] | None = None
    top_k: StrictInt | None = Field(default=None, ge=-1)
    repetition_penalty: Annotated[float, Field(gt=0, le=10, strict=True)] | None = None
    stop: StopStrings | None = None
    system_prompt: StrictStr | None = None


class TokenizeRequest(_Body):
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: StrictBool = True


class DetokenizeRequest(_Body):
    model: StrictStr | None = None
    tokens: list[TokenId]
