"""FastDeploy-style chat requests (seed 003), answered in FastDeploy's shapes.

Streamed answers are JSON lines `{"req_id", "token", "is_end", "send_idx", "error_code", "error_msg"}`;
a non-streamed answer carries the whole text in `tokens_all`. Errors have a non-zero `error_code`
(the HTTP status) and a readable `error_msg`. A `req_id` may not be used twice at the same time (the
engine client refuses a request id in use).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.errors import APIError
from tokenmill.server.protocol import FastDeployRequest
from tokenmill.server.state import ServerState, Ticket, unless_disconnected


def _error(req_id: str | None, exc: APIError) -> JSONResponse:
    body = {"req_id": req_id, "error_code": exc.status, "error_msg": exc.message, "is_end": 1}
    return JSONResponse(body, status_code=exc.status)


def _usage(output: RequestOutput) -> dict[str, int]:
    prompt, completion = len(output.prompt_token_ids), len(output.outputs[0].token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def handle(body: FastDeployRequest, request: Request, state: ServerState) -> Response:
    req_id = body.req_id or str(uuid.uuid4())
    try:
        prompt, params = await _prepare(body, state)
        ticket = state.admit()
    except APIError as exc:
        return _error(req_id, exc)
    stream = state.generate(
        prompt, params, "fd", ticket, body.timeout, request_id=f"fd-{req_id}", stream=body.stream
    )
    if body.stream:
        return StreamingResponse(
            _lines(req_id, stream, ticket, body.return_usage), media_type="application/json"
        )
    try:
        with ticket:
            output = await unless_disconnected(request, state.final_output(stream))
    except APIError as exc:
        return _error(req_id, exc)
    answer: dict[str, Any] = {
        "req_id": req_id,
        "tokens_all": output.outputs[0].text,
        "is_end": 1,
        "error_code": 0,
        "error_msg": "",
    }
    if body.return_usage:
        answer["usage"] = _usage(output)
    return JSONResponse(answer)


async def _prepare(body: FastDeployRequest, state: ServerState) -> tuple[list[int], SamplingParams]:
    if body.messages is None and body.text is None:
        raise APIError(400, "give text or messages", "text")
    if body.messages is not None:
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
    else:
        messages = [{"role": "user", "content": body.text or ""}]
    prompt = await state.encode_prompt(messages)
    if len(prompt) > state.max_prompt_tokens:
        raise APIError(
            400, f"the input is {len(prompt)} tokens, over MAX_SEQ_LEN ({state.max_prompt_tokens})", "text"
        )
    state.check_max_tokens(body.min_dec_len, "min_dec_len")
    max_dec_len = state.resolve_max_tokens(body.max_dec_len, len(prompt), "max_dec_len")
    if body.min_dec_len > max_dec_len:
        raise APIError(
            400, f"min_dec_len {body.min_dec_len} exceeds max_dec_len {max_dec_len}", "min_dec_len"
        )
    params = state.sampling_params(
        temperature=body.temperature,
        top_p=body.topp,
        repetition_penalty=body.penalty_score,
        frequency_penalty=body.frequency_score,
        presence_penalty=body.presence_score,
        min_tokens=body.min_dec_len,
        max_tokens=max_dec_len,
        seed=body.seed,
    )
    return prompt, params


async def _lines(
    req_id: str, stream: AsyncIterator[RequestOutput], ticket: Ticket, return_usage: bool
) -> AsyncIterator[str]:
    send_idx = 0
    try:
        async for output in stream:
            completion = output.outputs[0]
            if not (completion.delta_text or output.finished):
                continue
            line: dict[str, Any] = {
                "req_id": req_id,
                "token": completion.delta_text,
                "is_end": int(output.finished),
                "send_idx": send_idx,
                "error_code": 0,
                "error_msg": "",
            }
            if output.finished:
                line["tokens_all"] = completion.text
                if return_usage:
                    line["usage"] = _usage(output)
            send_idx += 1
            yield json.dumps(line, ensure_ascii=False) + "\n"
    except APIError as exc:
        error = {
            "req_id": req_id,
            "is_end": 1,
            "send_idx": send_idx,
            "error_code": exc.status,
            "error_msg": exc.message,
        }
        yield json.dumps(error, ensure_ascii=False) + "\n"
    finally:
        ticket.close()
