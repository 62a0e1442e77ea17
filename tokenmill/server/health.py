"""Operators' endpoints: liveness, readiness, Prometheus metrics, and the web chat page."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from tokenmill.server.state import ServerState

router = APIRouter(tags=["operations"])


def _state(request: Request) -> ServerState:
    return request.app.state.tm


@router.get("/health", summary="vLLM-style health: 200 once the engine runs")
async def health(request: Request) -> Response:
    lifecycle = _state(request).lifecycle
    ok = lifecycle.alive and lifecycle.loaded.is_set() and lifecycle.engine is not None
    return Response(status_code=200 if ok else 503)


@router.get("/v2/health/live", summary="the process is up and its engine has not failed")
async def live(request: Request) -> JSONResponse:
    alive = _state(request).lifecycle.alive
    return JSONResponse({"live": alive}, status_code=200 if alive else 503)


@router.get("/v2/health/ready", summary="the model is loaded and warm, and the server is not draining")
async def ready(request: Request) -> JSONResponse:
    lifecycle = _state(request).lifecycle
    body = {"ready": lifecycle.is_ready, "loaded": lifecycle.loaded.is_set(), "draining": lifecycle.draining}
    return JSONResponse(body, status_code=200 if lifecycle.is_ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/chat", summary="web chat page", response_class=HTMLResponse)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(resources.files("tokenmill.server").joinpath("static/chat.html").read_text("utf-8"))
