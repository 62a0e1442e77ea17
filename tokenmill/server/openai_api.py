"""OpenAI-compatible endpoints (vLLM is the reference): models, completions, chat, tokenize, version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

import tokenmill
from tokenmill.sampling_params import SamplingParams
from tokenmill.server import fastdeploy
from tokenmill.server.chat_output import ChoiceReader
from tokenmill.server.errors import APIError
from tokenmill.server.fastdeploy_judge_requests import ChatBody, FastDeployRequest
from tokenmill.server.json_body import JsonRoute
from tokenmill.server.openai_dialects import ChatDialect, CompletionDialect
from tokenmill.server.openai_requests import (
    SERVER_TEMPLATE_ARGUMENTS,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    template_messages,
)
from tokenmill.server.reasoning import opens_thinking
from tokenmill.server.responses import (
    ChatCompletionResponse,
    CompletionResponse,
    DetokenizeResponse,
    FastDeployMessage,
    ModelCard,
    ModelList,
    TokenizeResponse,
    VersionResponse,
)
from tokenmill.server.state import ServerState
from tokenmill.server.streaming import respond
from tokenmill.server.structured_request import Constraint, compile_constraint, requested_constraint
from tokenmill.server.tools import ToolUse

router = APIRouter(tags=["openai"], route_class=JsonRoute)


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    state: ServerState = request.app.state.tm
    created = int(state.started_at)
    parents = {m.name: m.base_model_name for m in state.config.lora_module_specs() if m.base_model_name}
    adapters = [
        ModelCard(id=name, created=created, parent=parents.get(name, state.model_name))
        for name in state.admission.lora_adapters()
    ]
    return ModelList(data=[ModelCard(id=state.model_name, created=created), *adapters])


@router.get("/version")
async def version() -> VersionResponse:
    return VersionResponse(version=tokenmill.__version__)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    state: ServerState = request.app.state.tm
    state.check_model(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "give exactly one of prompt or messages", "prompt")
    if body.messages is not None:
        tokens = await state.encode_chat(template_messages(body.messages))
    else:
        tokens = await state.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return TokenizeResponse(count=len(tokens), max_model_len=state.max_prompt_tokens + 1, tokens=tokens)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    """The text of token ids, decoded on a prompt thread: a body's worth of ids takes most of a second."""
    state: ServerState = request.app.state.tm
    state.check_model(body.model)
    largest = max(body.tokens, default=0)
    if largest >= state.vocab_size:
        raise APIError(
            400,
            f"tokens must lie in [0, {state.vocab_size}) (this model's vocabulary); got {largest}",
            "tokens",
        )
    return DetokenizeResponse(prompt=await state.prompts.run(state.tokenizer.decode, body.tokens))


# ---- shared by completions and chat ---------------------------------------------------------------


def _sampling(
    state: ServerState,
    body: CompletionRequest | ChatCompletionRequest,
    max_tokens: int,
    logprobs: int | None,
    constraint: Constraint | None,
) -> SamplingParams:
    return state.sampling_params(
        n=body.n,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        max_tokens=max_tokens,
        min_tokens=body.min_tokens,
        stop=body.stop,
        stop_token_ids=body.stop_token_ids,
        ignore_eos=body.ignore_eos,
        skip_special_tokens=body.skip_special_tokens,
        logprobs=logprobs,
        structured_outputs=constraint[0] if constraint else None,
    )


def _refuse_unsupported(body: CompletionRequest | ChatCompletionRequest, *fields: tuple[str, bool]) -> None:
    """A 400 naming the first of `fields` (name, whether the request sets it) that is set, or
    `logit_bias` unless empty: accepted and ignored, they would change nothing the caller could notice.
    Checked before the prompts are tokenized or a constraint compiled."""
    for name, present in (*fields, ("logit_bias", bool(body.logit_bias))):
        if present:
            raise APIError(400, f"{name} is not supported", name)


async def _answer(
    request: Request,
    state: ServerState,
    dialect: CompletionDialect | ChatDialect,
    prompts: list[list[int]],
    params: SamplingParams,
    stream: bool,
    lora: str | None,
) -> Response:
    """Admit the request, then generate every prompt at once (under LoRA adapter `lora`, if any); the
    engine's request ids carry the dialect's prefix (cmpl-, chatcmpl-) as vLLM's do."""
    state.refuse_early(prompts, params)
    ticket = state.admit()
    streams = [
        state.generate(p, params, dialect.id_prefix, ticket, stream=stream, lora=lora) for p in prompts
    ]
    return await respond(request, state, dialect, streams, ticket, stream)


# ---- /v1/completions ------------------------------------------------------------------------------


@router.post("/v1/completions", response_model=None, responses={200: {"model": CompletionResponse}})
async def completions(body: CompletionRequest, request: Request) -> Response:
    state: ServerState = request.app.state.tm
    lora = state.check_model(body.model)
    prompts, params = await prepare_completion(body, state)
    dialect = CompletionDialect(
        state.tokenizer, lora or state.model_name, body, logprobs=body.logprobs is not None
    )
    return await _answer(request, state, dialect, prompts, params, body.stream, lora)


async def prepare_completion(
    body: CompletionRequest, state: ServerState
) -> tuple[list[list[int]], SamplingParams]:
    """The prompts and sampling parameters of a completion request (HTTP, or gRPC's `text_input`)."""
    _refuse_unsupported(body, ("echo", body.echo), ("suffix", body.suffix is not None))
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of must equal n (beam search is not supported)", "best_of")
    prompts = await _completion_prompts(state, body.prompt, body.n)
    max_tokens = min(state.resolve_max_tokens(body.max_tokens, len(p), "max_tokens") for p in prompts)
    constraint = requested_constraint(body)
    await compile_constraint(state, constraint)
    return prompts, _sampling(state, body, max_tokens, body.logprobs, constraint)


async def _completion_prompts(
    state: ServerState, prompt: str | list[str] | list[int] | list[list[int]], n: int
) -> list[list[int]]:
    one_prompt = isinstance(prompt, str) or isinstance(prompt[0], int)
    state.admission.check_sequence_count(1 if one_prompt else len(prompt), n)
    if isinstance(prompt, str):
        batch: list[list[int]] = [await state.encode(prompt)]
    elif isinstance(prompt[0], str):
        batch = await state.encode_many(prompt)  # type: ignore[arg-type]
    elif isinstance(prompt[0], int):
        batch = [prompt]  # type: ignore[list-item]
    else:
        batch = list(prompt)  # type: ignore[arg-type]
    for index, ids in enumerate(batch):
        param = "prompt" if len(batch) == 1 else f"prompt[{index}]"
        if not ids:
            raise APIError(400, f"{param} is empty", param)
        if max(ids) >= state.vocab_size:
            raise APIError(
                400, f"{param} holds token ids outside the vocabulary [0, {state.vocab_size})", param
            )
        state.check_prompt_length(ids, param)
    return batch


# ---- /v1/chat/completions -------------------------------------------------------------------------


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={200: {"model": ChatCompletionResponse | FastDeployMessage}},
)
async def chat_completions(body: ChatBody, request: Request) -> Response:
    state: ServerState = request.app.state.tm
    if isinstance(body, FastDeployRequest):
        return await fastdeploy.handle(body, request, state)
    return await _openai_chat(body, request, state)


async def _openai_chat(body: ChatCompletionRequest, request: Request, state: ServerState) -> Response:
    lora = state.check_model(body.model)
    state.admission.check_sequence_count(1, body.n)
    _refuse_unsupported(body)
    for name in ("functions", "function_call"):
        if getattr(body, name) is not None:
            raise APIError(400, f"{name} is not supported; describe functions in tools instead", name)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", "top_logprobs")
    tool_use = ToolUse.of(body)
    constraint = requested_constraint(body)
    forced = tool_use.constraint()
    if forced is not None and constraint is not None:
        message = f"tool_choice {tool_use.mode} cannot be combined with {constraint[1]}"
        raise APIError(400, message, "tool_choice")
    constraint = constraint or forced
    requested_kwargs = body.chat_template_kwargs.as_kwargs() if body.chat_template_kwargs else {}
    clashing = sorted(SERVER_TEMPLATE_ARGUMENTS & requested_kwargs.keys())
    if clashing:
        param = f"chat_template_kwargs.{clashing[0]}"
        message = f"{param}: the server passes this argument to the chat template itself; leave it out"
        raise APIError(400, message, param)
    template_kwargs = {**tool_use.template_kwargs(), **requested_kwargs}
    prompt = await state.encode_chat(template_messages(body.messages), template_kwargs)
    state.check_prompt_length(prompt, "messages")
    requested = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = state.resolve_max_tokens(requested, len(prompt), param)
    await compile_constraint(state, constraint)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = _sampling(state, body, max_tokens, logprobs, constraint)
    thinking = bool(template_kwargs.get("enable_thinking", state.config.enable_thinking))
    prompt_end = state.tokenizer.decode(prompt[-4:], skip_special_tokens=False)
    new_reader = ChoiceReader.factory(thinking, thinking and opens_thinking(prompt_end), tool_use)
    dialect = ChatDialect(state.tokenizer, lora or state.model_name, body, body.logprobs, new_reader)
    return await _answer(request, state, dialect, [prompt], params, body.stream, lora)
