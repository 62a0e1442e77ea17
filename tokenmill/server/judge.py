"""The judge's contract (seeds 000-002): `GET /` health and `POST /predict`, single or batch.

A batch never fails as a whole because of one item: an over-long prompt is cut from the left to fit,
an empty one gets an empty answer. All prompts reach the engine at once.
"""

from __future__ import annotations

import asyncio
import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tokenmill.sampling_params import SamplingParams
from tokenmill.server.errors import APIError
from tokenmill.server.protocol import PredictRequest
from tokenmill.server.state import ServerState, Ticket, question_messages, unless_disconnected

logger = logging.getLogger(__name__)

router = APIRouter(tags=["judge"])

_THINKING = re.compile(r"<think>.*?(</think>|$)\s*", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Drop Qwen3 reasoning blocks, closed or cut off by the token limit."""
    return _THINKING.sub("", text).strip()


@router.get("/", summary="judge health check")
async def health(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    if state.config.health_waits_for_ready and not state.ready.is_set():
        waiter = asyncio.ensure_future(state.ready.wait())
        failed = asyncio.ensure_future(_load_failed(state))
        await asyncio.wait({waiter, failed}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        failed.cancel()
    if not state.alive:
        return JSONResponse({"status": "error", "message": "the engine has stopped"}, status_code=503)
    if not state.is_ready:
        status = "draining" if state.draining else "loading"
        return JSONResponse({"status": status}, status_code=503)
    return JSONResponse({"status": "batch" if state.config.batch_mode else "ok"})


async def _load_failed(state: ServerState) -> None:
    while state.alive:
        await asyncio.sleep(0.2)


@router.post("/predict", summary="answer one question or a batch (judge contract)")
async def predict(body: PredictRequest, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    config = state.config
    max_tokens = body.max_new_tokens or config.default_max_tokens
    state.check_max_tokens(max_tokens, "max_new_tokens")
    stop = list(config.predict_stop) + ([body.stop] if isinstance(body.stop, str) else list(body.stop or []))
    params = state.sampling_params(
        temperature=config.predict_temperature if body.temperature is None else body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
        max_tokens=max_tokens,
        stop=stop or None,
    )
    questions = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    system = body.system_prompt if body.system_prompt is not None else config.system_prompt
    prompts = [
        _prompt_ids(state, q, system, index) if q.strip() else None for index, q in enumerate(questions)
    ]
    with state.admit() as ticket:
        answers = await unless_disconnected(
            request, asyncio.gather(*(_answer(state, p, params, ticket) for p in prompts))
        )
    if config.strip_thinking:
        answers = [strip_thinking(a) for a in answers]
    return JSONResponse({"response": answers[0] if isinstance(body.prompt, str) else answers})


async def _answer(
    state: ServerState, prompt: list[int] | None, params: SamplingParams, ticket: Ticket
) -> str:
    if prompt is None:
        return ""
    output = await state.final_output(state.generate(prompt, params, "predict", ticket, stream=False))
    return output.outputs[0].text


def _prompt_ids(state: ServerState, question: str, system: str | None, index: int) -> list[int]:
    """Chat-templated prompt; an over-long question loses its beginning, the template stays whole."""

    def render(text: str) -> list[int]:
        return state.encode_prompt(question_messages(text, system))

    ids = render(question)
    limit = state.max_prompt_tokens
    if len(ids) <= limit:
        return ids
    content = state.encode(question, add_special_tokens=False)
    overflow = len(ids) - limit
    while overflow < len(content):
        kept = state.tokenizer.decode(content[overflow:])
        ids = render(kept)
        if len(ids) <= limit:
            logger.warning("prompt %d cut from the left by %d tokens to fit %d", index, overflow, limit)
            return ids
        overflow += len(ids) - limit
    raise APIError(
        400, f"prompt[{index}]: the template alone exceeds the {limit}-token input limit", "prompt"
    )
