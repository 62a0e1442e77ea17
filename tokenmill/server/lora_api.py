"""Runtime LoRA adapter management, vLLM's endpoints: `POST /v1/load_lora_adapter` and
`/v1/unload_lora_adapter`. Mounted only with --runtime-lora-updates, behind the API key.

The adapter is read and validated on a worker thread; only its registration (a shape check and a dict
entry) runs on the engine thread, between steps. Requests name loaded adapters by `model` (OpenAI) or
`lora` (/predict); see `Admission.check_model`.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tokenmill.engine.async_llm import AsyncLLM
from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.lora.adapter import read_adapter
from tokenmill.server.errors import APIError
from tokenmill.server.json_body import JsonRoute
from tokenmill.server.openai_requests import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from tokenmill.server.state import ServerState

router = APIRouter(tags=["lora"], route_class=JsonRoute)


def _lora_engine(state: ServerState) -> AsyncLLM:
    engine = state.lifecycle.serving_engine()
    if engine.engine.lora is None:
        raise APIError(400, "LoRA is not enabled on this server (start it with --enable-lora)")
    return engine


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadLoRAAdapterRequest, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    engine = _lora_engine(state)
    if body.lora_name == state.model_name:
        raise APIError(400, f"lora_name {body.lora_name!r} is the base model's name", "lora_name")
    max_rank = engine.engine.config.max_lora_rank
    try:
        adapter = await asyncio.to_thread(read_adapter, body.lora_name, body.lora_path, max_rank)
    except (FileNotFoundError, ValueError) as exc:
        raise APIError(400, str(exc), "lora_path") from exc

    def register(llm: LLMEngine) -> None:
        assert llm.lora is not None
        llm.lora.register(adapter)

    try:
        await engine.call(register)
    except ValueError as exc:
        raise APIError(400, str(exc), "lora_name") from exc
    return JSONResponse({"status": "ok", "lora_name": body.lora_name})


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.tm
    engine = _lora_engine(state)
    if body.lora_name == state.config.default_lora:
        raise APIError(409, f"{body.lora_name!r} is the server's --default-lora", "lora_name")
    try:
        await engine.call(lambda llm: llm.remove_lora(body.lora_name))
    except KeyError as exc:
        raise APIError(404, exc.args[0], "lora_name") from exc
    except ValueError as exc:
        raise APIError(409, str(exc), "lora_name") from exc
    return JSONResponse({"status": "ok", "lora_name": body.lora_name})
