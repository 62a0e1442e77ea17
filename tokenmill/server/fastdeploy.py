"""FastDeploy-style chat requests (seed 003), answered in FastDeploy's shapes.

Streamed answers are JSON lines `{"req_id", "token", "is_end", "send_idx", "error_code", "error_msg"}`;
a non-streamed answer carries the whole text in `tokens_all`. Errors have a non-zero `error_code`
(the HTTP status) and a readable `error_msg`. A `req_id` may not be used twice at the same time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.errors import APIError
from tokenmill.server.fastdeploy_judge_requests import FastDeployRequest
from tokenmill.server.openai_requests import template_messages
from tokenmill.server.responses import FastDeployMessage, UsageInfo
from tokenmill.server.state import ServerState
from tokenmill.server.streaming import Dialect, json_response, respond


class FastDeployDialect(Dialect):
    """One sequence per request; each update is a line numbered by `send_idx`, the last one whole."""

    media_type = "application/json"

    def __init__(self, req_id: str, return_usage: bool) -> None:
        super().__init__()
        self.req_id = req_id
        self.return_usage = return_usage
        self.send_idx = 0

    @classmethod
    def of(cls, body: FastDeployRequest) -> FastDeployDialect:
        """A request's dialect; a request without a `req_id` gets a fresh one."""
        return cls(body.req_id or str(uuid.uuid4()), body.return_usage)

    def update(
        self, index: int, output: RequestOutput, completion: CompletionOutput
    ) -> Iterable[FastDeployMessage]:
        line = FastDeployMessage(
            req_id=self.req_id,
            token=completion.delta_text,
            is_end=int(completion.finished),
            send_idx=self.send_idx,
            **(self.last_fields(output) if completion.finished else {}),
        )
        self.send_idx += 1
        yield line

    def whole(self, outputs: list[RequestOutput]) -> FastDeployMessage:
        return FastDeployMessage(req_id=self.req_id, is_end=1, **self.last_fields(outputs[0]))

    def last_fields(self, output: RequestOutput) -> dict[str, object]:
        fields: dict[str, object] = {"tokens_all": output.outputs[0].text}
        if self.return_usage:
            fields["usage"] = UsageInfo.of([output])
        return fields

    def frame(self, event: BaseModel) -> str:
        return event.model_dump_json() + "\n"

    def end(self) -> list[str]:
        return []

    def failure(self, exc: APIError) -> list[str]:
        return [self.frame(self.error(exc, send_idx=self.send_idx))]

    def error(self, exc: APIError, **fields: object) -> FastDeployMessage:
        return FastDeployMessage(
            req_id=self.req_id, is_end=1, error_code=exc.status, error_msg=exc.message, **fields
        )


def engine_request_id(req_id: str) -> str:
    """The engine's id of a FastDeploy request: one `req_id` is live once, whichever protocol carries it."""
    return f"fd-{req_id}"


async def handle(body: FastDeployRequest, request: Request, state: ServerState) -> Response:
    dialect = FastDeployDialect.of(body)
    try:
        lora = state.check_model(body.model)
        prompt, params = await prepare(body, state)
        state.refuse_early([prompt], params)
        ticket = state.admit()
        stream = state.generate(
            prompt,
            params,
            "fd",
            ticket,
            body.timeout,
            request_id=engine_request_id(dialect.req_id),
            stream=body.stream,
            lora=lora,
        )
        return await respond(request, state, dialect, [stream], ticket, body.stream)
    except APIError as exc:
        return json_response(dialect.error(exc), exc.status)


async def prepare(body: FastDeployRequest, state: ServerState) -> tuple[list[int], SamplingParams]:
    """The prompt and sampling parameters of a FastDeploy request (HTTP, or gRPC's `IN` tensor)."""
    if body.messages is None and body.text is None:
        raise APIError(400, "give text or messages", "text")
    if body.messages is not None:
        messages = template_messages(body.messages)
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
