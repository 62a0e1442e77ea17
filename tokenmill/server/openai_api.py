"""OpenAI-compatible endpoints (vLLM is the reference): models, completions, chat, tokenize, version."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

import tokenmill
from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.server import fastdeploy
from tokenmill.server.errors import APIError, error_body
from tokenmill.server.protocol import (
    ChatBody,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    FastDeployRequest,
    TokenizeRequest,
)
from tokenmill.server.state import ServerState, Ticket, new_id, unless_disconnected
from tokenmill.tokenizer import Tokenizer

router = APIRouter(tags=["openai"])


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    card = {
        "id": state.model_name,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "tokenmill",
    }
    return JSONResponse({"object": "list", "data": [card]})


@router.get("/version")
async def version() -> JSONResponse:
    return JSONResponse({"version": tokenmill.__version__})


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    state.check_model(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "give exactly one of prompt or messages", "prompt")
    if body.messages is not None:
        tokens = await state.encode_chat(
            [{"role": _role(m.role), "content": m.text()} for m in body.messages]
        )
    else:
        tokens = await state.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return JSONResponse(
        {"count": len(tokens), "max_model_len": state.max_prompt_tokens + 1, "tokens": tokens}
    )


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    state.check_model(body.model)
    if any(t >= state.vocab_size for t in body.tokens):
        raise APIError(400, f"tokens must lie in [0, {state.vocab_size})", "tokens")
    return JSONResponse({"prompt": state.tokenizer.decode(body.tokens)})


# ---- shared by completions and chat ---------------------------------------------------------------


def _sampling(
    state: ServerState, body: CompletionRequest | ChatCompletionRequest, max_tokens: int, logprobs: int | None
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
    )


def _usage(outputs: list[RequestOutput]) -> dict[str, int]:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _merged(streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several requests' updates as they come, tagged with the request's position."""
    queue: asyncio.Queue[tuple[int, RequestOutput] | BaseException | None] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for output in stream:
                await queue.put((index, output))
        except BaseException as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()


def _streaming(body_iter: AsyncIterator[str], ticket: Ticket) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for chunk in body_iter:
                yield chunk
        except APIError as exc:
            yield sse(error_body(exc.status, exc.message, exc.param))
            yield sse("[DONE]")
        finally:
            ticket.close()

    return StreamingResponse(guarded(), media_type="text/event-stream")


def _token_text(tokenizer: Tokenizer, token: int) -> str:
    return tokenizer.decode([token], skip_special_tokens=False)


# ---- /v1/completions ------------------------------------------------------------------------------


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state: ServerState = request.app.state.tm
    state.check_model(body.model)
    for name, unsupported in (("echo", body.echo), ("suffix", body.suffix is not None)):
        if unsupported:
            raise APIError(400, f"{name} is not supported", name)
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of must equal n (beam search is not supported)", "best_of")
    prompts = await _completion_prompts(state, body.prompt)
    max_tokens = min(state.resolve_max_tokens(body.max_tokens, len(p), "max_tokens") for p in prompts)
    params = _sampling(state, body, max_tokens, body.logprobs)
    request_id, created = new_id("cmpl"), int(time.time())
    ticket = state.admit()
    streams = [state.generate(p, params, "cmpl", ticket, stream=body.stream) for p in prompts]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(
            _completion_chunks(state, streams, request_id, created, body.n, include_usage), ticket
        )
    with ticket:
        outputs = await unless_disconnected(
            request, asyncio.gather(*(state.final_output(s) for s in streams))
        )
    choices = [
        _completion_choice(state.tokenizer, i * body.n + c.index, c, body.logprobs is not None)
        for i, out in enumerate(outputs)
        for c in out.outputs
    ]
    return JSONResponse(
        {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": state.model_name,
            "choices": choices,
            "usage": _usage(outputs),
        }
    )


async def _completion_prompts(
    state: ServerState, prompt: str | list[str] | list[int] | list[list[int]]
) -> list[list[int]]:
    if isinstance(prompt, str):
        batch: list[list[int]] = [await state.encode(prompt)]
    elif isinstance(prompt[0], str):
        state.admission.check_prompt_count(len(prompt))
        batch = await state.encode_many(prompt)  # type: ignore[arg-type]
    elif isinstance(prompt[0], int):
        batch = [prompt]  # type: ignore[list-item]
    else:
        state.admission.check_prompt_count(len(prompt))
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


def _completion_logprobs(
    tokenizer: Tokenizer, completion: CompletionOutput, start: int = 0
) -> dict[str, Any]:
    entries = (completion.logprobs or [])[start:]
    tokens = completion.token_ids[start : start + len(entries)]
    return {
        "tokens": [_token_text(tokenizer, t) for t in tokens],
        "token_logprobs": [entry[t] for t, entry in zip(tokens, entries)],
        "top_logprobs": [{_token_text(tokenizer, k): v for k, v in entry.items()} for entry in entries],
        "text_offset": [],
    }


def _completion_choice(
    tokenizer: Tokenizer, index: int, c: CompletionOutput, logprobs: bool
) -> dict[str, Any]:
    return {
        "index": index,
        "text": c.text,
        "logprobs": _completion_logprobs(tokenizer, c) if logprobs else None,
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
    }


async def _completion_chunks(
    state: ServerState,
    streams: list[AsyncIterator[RequestOutput]],
    request_id: str,
    created: int,
    n: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    finals: dict[int, RequestOutput] = {}
    done: set[int] = set()
    head = {"id": request_id, "object": "text_completion", "created": created, "model": state.model_name}
    async for index, output in _merged(streams):
        for c in output.outputs:
            choice_index = index * n + c.index
            if choice_index in done or not (c.delta_text or c.finished):
                continue
            if c.finished:
                done.add(choice_index)
            start = len(c.token_ids) - len(c.delta_token_ids)
            choice = {
                "index": choice_index,
                "text": c.delta_text,
                "logprobs": _completion_logprobs(state.tokenizer, c, start)
                if c.logprobs is not None
                else None,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            }
            yield sse({**head, "choices": [choice], **({"usage": None} if include_usage else {})})
        if output.finished:
            finals[index] = output
    if include_usage:
        yield sse({**head, "choices": [], "usage": _usage(list(finals.values()))})
    yield sse("[DONE]")


# ---- /v1/chat/completions -------------------------------------------------------------------------


def _role(role: str) -> str:
    return "system" if role == "developer" else role


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatBody, request: Request) -> Response:
    state: ServerState = request.app.state.tm
    if isinstance(body, FastDeployRequest):
        return await fastdeploy.handle(body, request, state)
    return await _openai_chat(body, request, state)


async def _openai_chat(body: ChatCompletionRequest, request: Request, state: ServerState) -> Response:
    state.check_model(body.model)
    if body.tools:
        raise APIError(400, "tools are not supported", "tools")
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", "top_logprobs")
    messages = [{"role": _role(m.role), "content": m.text()} for m in body.messages]
    prompt = await state.encode_chat(messages, body.chat_template_kwargs)
    state.check_prompt_length(prompt, "messages")
    requested = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = state.resolve_max_tokens(requested, len(prompt), param)
    params = _sampling(state, body, max_tokens, (body.top_logprobs or 0) if body.logprobs else None)
    request_id, created = new_id("chatcmpl"), int(time.time())
    ticket = state.admit()
    stream = state.generate(prompt, params, "chatcmpl", ticket, stream=body.stream)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(_chat_chunks(state, stream, request_id, created, body.n, include_usage), ticket)
    with ticket:
        output = await unless_disconnected(request, state.final_output(stream))
    choices = [
        {
            "index": c.index,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": _chat_logprobs(state.tokenizer, c) if body.logprobs else None,
            "finish_reason": c.finish_reason,
            "stop_reason": c.stop_reason,
        }
        for c in output.outputs
    ]
    return JSONResponse(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": state.model_name,
            "choices": choices,
            "usage": _usage([output]),
        }
    )


def _chat_logprobs(tokenizer: Tokenizer, c: CompletionOutput, start: int = 0) -> dict[str, Any]:
    content = []
    for token, entry in zip(c.token_ids[start:], (c.logprobs or [])[start:]):
        text = _token_text(tokenizer, token)
        alternatives = [
            {
                "token": _token_text(tokenizer, k),
                "logprob": v,
                "bytes": list(_token_text(tokenizer, k).encode()),
            }
            for k, v in sorted(entry.items(), key=lambda kv: -kv[1])
        ]
        content.append(
            {
                "token": text,
                "logprob": entry[token],
                "bytes": list(text.encode()),
                "top_logprobs": alternatives,
            }
        )
    return {"content": content}


async def _chat_chunks(
    state: ServerState,
    stream: AsyncIterator[RequestOutput],
    request_id: str,
    created: int,
    n: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    head = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": state.model_name,
    }
    usage = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**head, "choices": [choice], **usage})

    for index in range(n):
        yield chunk(index, {"role": "assistant", "content": ""})
    last: RequestOutput | None = None
    done: set[int] = set()
    async for output in stream:
        last = output
        for c in output.outputs:
            if c.index in done:
                continue
            if c.delta_text:
                start = len(c.token_ids) - len(c.delta_token_ids)
                logprobs = _chat_logprobs(state.tokenizer, c, start) if c.logprobs is not None else None
                yield chunk(c.index, {"content": c.delta_text}, logprobs=logprobs)
            if c.finished:
                done.add(c.index)
                yield chunk(c.index, {}, c.finish_reason)
    if include_usage and last is not None:
        yield sse({**head, "choices": [], "usage": _usage([last])})
    yield sse("[DONE]")
