"""Errors as OpenAI-style bodies, `{"error": {"message", "type", "param", "code"}}`, with the right status."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    408: "TimeoutError",
    413: "RequestTooLargeError",
    415: "UnsupportedMediaTypeError",
    429: "RateLimitError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else HTTPStatus(status).phrase)
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


RETRY_AFTER_SECONDS = 1  # a full queue drains in about a decode step or two


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    headers = {401: {"WWW-Authenticate": "Bearer"}, 429: {"Retry-After": str(RETRY_AFTER_SECONDS)}}
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers.get(status))


def bad_request_from_value_error(exc: ValueError) -> APIError:
    """Engine and SamplingParams errors start with the offending field's name; surface it as `param`."""
    message = str(exc)
    first = message.split(" ", 1)[0].rstrip(":")
    return APIError(400, message, first if first.isidentifier() else None)


_TYPE_LABELS = frozenset(
    {"str", "int", "float", "bool", "none", "dict", "list", "tuple", "bytes", "json-or-python"}
)


def field_path(location: tuple[Any, ...]) -> str:
    """('body', 'openai', 'messages', 0, 'content', 'str') -> 'messages[0].content'.

    Drops the body marker, the dialect tags and the union branch labels pydantic puts in locations."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        text = str(part)
        if text in ("body", "openai", "fastdeploy") or text in _TYPE_LABELS or any(c in text for c in "[(-"):
            continue
        path += f".{text}" if path else text
    return path or "body"


def validation_message(errors: Sequence[Any]) -> tuple[str, str]:
    """A pydantic validation failure as one message naming the field, and that field's path."""
    errors = errors or [{"loc": ("body",), "msg": "invalid request", "type": ""}]
    invalid_json = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid_json:
        reason, position = invalid_json[0].get("ctx", {}).get("error"), invalid_json[0].get("loc", ())[-1]
        where = f" at position {position}" if isinstance(position, int) and position else ""
        return f"body is not valid JSON: {reason or 'unreadable'}{where}", "body"
    # the deepest location is the union branch that matched the input best
    path = max((field_path(tuple(e.get("loc", ("body",)))) for e in errors), key=len)
    same_field = [e for e in errors if field_path(tuple(e.get("loc", ()))) == path]
    reasons = list(dict.fromkeys(str(e.get("msg", "invalid value")) for e in same_field))
    message = f"{path}: " + "; or ".join(reasons)
    others = len({field_path(tuple(e.get("loc", ()))) for e in errors}) - 1
    if others:
        message += f" (and problems with {others} other field{'s' if others > 1 else ''})"
    return message, path


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        if any("fastdeploy" in e.get("loc", ()) for e in exc.errors()):  # answer in FastDeploy's shape
            return JSONResponse({"req_id": None, "is_end": 1, "error_code": 400, "error_msg": message}, 400)
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))


class BodySizeLimit:
    """Answers 413 when a request body is declared, or turns out, to exceed `max_bytes`.

    The body is read (up to the limit) before the application sees it, so a streamed upload without a
    Content-Length is cut off as early as one that declares its size."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body exceeds {self.max_bytes} bytes", "body")
        await response(scope, receive, send)
