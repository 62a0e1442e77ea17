"""The judge's contract (seeds 000-002): `GET /` health and `POST /predict`, single or batch.

A batch never fails as a whole because of one item: an over-long prompt is cut from the left to fit,
an empty one gets an empty answer. All prompts reach the engine at once. `max_new_tokens` is capped
by `--predict-max-new-tokens` (and `--max-dec-len`), so no single answer runs to the full context.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tokenmill.sampling_params import SamplingParams
from tokenmill.server.admission import Ticket
from tokenmill.server.disconnect import unless_disconnected
from tokenmill.server.errors import APIError
from tokenmill.server.fastdeploy_judge_requests import PredictRequest
from tokenmill.server.json_body import JsonRoute
from tokenmill.server.prompts import PromptEncoder, question_messages
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)

router = APIRouter(tags=["judge"], route_class=JsonRoute)

_THINKING = re.compile(r"<think>.*?(</think>|$)\s*", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Drop Qwen3 reasoning blocks, closed or cut off by the token limit."""
    return _THINKING.sub("", text).strip()


@router.get("/", summary="judge health check")
@router.head("/", include_in_schema=False)  # load balancers probe with HEAD
async def health(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    lifecycle = state.lifecycle
    if state.config.health_waits_for_ready and not lifecycle.ready.is_set():
        await lifecycle.wait_ready_or_failed()
    if not lifecycle.alive:
        return JSONResponse({"status": "error", "message": "the engine has stopped"}, status_code=503)
    if not lifecycle.is_ready:
        status = "draining" if lifecycle.draining else "loading"
        return JSONResponse({"status": status}, status_code=503)
    return JSONResponse({"status": "batch" if state.config.batch_mode else "ok"})


@router.post("/predict", summary="answer one question or a batch (judge contract)")
async def predict(body: PredictRequest, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    config = state.config
    lora = state.check_model(body.lora, "lora")
    max_tokens = body.max_new_tokens or config.default_max_tokens
    if body.max_new_tokens is not None and body.max_new_tokens > config.predict_max_new_tokens:
        raise APIError(
            400,
            f"max_new_tokens is {body.max_new_tokens}; at most {config.predict_max_new_tokens} "
            "(--predict-max-new-tokens) is allowed",
            "max_new_tokens",
        )
    state.admission.check_max_tokens(max_tokens, "max_new_tokens")
    stop = list(config.predict_stop) + ([body.stop] if isinstance(body.stop, str) else list(body.stop or []))
    params = state.admission.sampling_params(
        temperature=config.predict_temperature if body.temperature is None else body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
        max_tokens=max_tokens,
        stop=stop or None,
    )
    questions = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    state.admission.check_sequence_count(len(questions))
    system = body.system_prompt if body.system_prompt is not None else config.system_prompt
    state.prompts.check_text_length(len(system or ""), "system_prompt")
    with state.admission.admit() as ticket:
        answers = await unless_disconnected(request, _answers(state, questions, system, params, ticket, lora))
    if config.strip_thinking:
        answers = [strip_thinking(a) for a in answers]
    return JSONResponse({"response": answers[0] if isinstance(body.prompt, str) else answers})


async def _answers(
    state: ServerState,
    questions: list[str],
    system: str | None,
    params: SamplingParams,
    ticket: Ticket,
    lora: str | None,
) -> list[str]:
    """Every non-empty question's answer from one batch submitted to the engine; "" for the rest."""
    prompts = await state.prompts.run(_prompt_batch, state.prompts, questions, system)
    asked = [prompt for prompt in prompts if prompt is not None]
    outputs = await state.generation.generate_batch(asked, params, "predict", ticket, lora) if asked else []
    texts = iter(output.outputs[0].text for output in outputs)
    return ["" if prompt is None else next(texts) for prompt in prompts]


def _prompt_batch(prompts: PromptEncoder, questions: list[str], system: str | None) -> list[list[int] | None]:
    """On a worker thread: every question's prompt ids, None for an empty question. Each distinct
    question is rendered once, all of them in one template call and one tokenizer call. Text beyond what
    the token limit could ever hold is dropped before tokenizing."""
    kept = [question[-prompts.max_prompt_chars :] if question.strip() else None for question in questions]
    distinct = list(dict.fromkeys(question for question in kept if question is not None))
    rendered = prompts.conversations_now([question_messages(question, system) for question in distinct])
    ids_of = dict(zip(distinct, rendered))
    limit = prompts.admission.max_prompt_tokens
    batch: list[list[int] | None] = []
    for index, question in enumerate(kept):
        if question is None:
            batch.append(None)
            continue
        if len(ids_of[question]) > limit:
            ids_of[question] = _cut_to_fit(prompts, question, system, index, ids_of[question])
        batch.append(ids_of[question])
    return batch


def _cut_to_fit(
    prompts: PromptEncoder, question: str, system: str | None, index: int, ids: list[int]
) -> list[int]:
    """The chat-templated prompt of an over-long question without its beginning: the template stays
    whole."""

    def render(text: str) -> list[int]:
        return prompts.conversation_now(question_messages(text, system))

    limit = prompts.admission.max_prompt_tokens
    content = prompts.encode_now(question, add_special_tokens=False)
    overflow = len(ids) - limit
    while overflow < len(content):
        kept = prompts.tokenizer.decode(content[overflow:])
        ids = render(kept)
        if len(ids) <= limit:
            logger.warning("prompt %d cut from the left by %d tokens to fit %d", index, overflow, limit)
            return ids
        overflow += len(ids) - limit
    raise APIError(
        400, f"prompt[{index}]: the template alone exceeds the {limit}-token input limit", "prompt"
    )
