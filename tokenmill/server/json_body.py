"""Request bodies are JSON objects: the route class of every router, so that a body that cannot be read
as JSON, or comes as another media type, is refused with a message that says so.

FastAPI reports only its own `JSONDecodeError` as a JSON error: a body that is not UTF-8, nests deeper
than Python's recursion limit or holds an integer of more than 4300 digits became a bare "There was an
error parsing the body" naming nothing. And a body sent as `text/plain` or form data (`curl -d` without
`-H`) is not parsed at all, so it was refused as "body: Input should be a valid dictionary", blaming
JSON that may be perfectly good. Here such bodies become JSON errors with their reason, a body without a
Content-Type is read as JSON (the judge's and curl's plain posts), and any other media type is a 415.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from tokenmill.server.errors import APIError

JSON_MEDIA_TYPE = "application/json"


def parse_json(data: bytes | str) -> Any:
    """`json.loads`, every way of failing a `JSONDecodeError` with its reason (HTTP bodies, gRPC's IN)."""
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"not UTF-8 ({exc.reason})", "", exc.start) from exc
    except RecursionError as exc:
        raise json.JSONDecodeError("nested too deeply", "", 0) from exc
    except ValueError as exc:  # an integer longer than int() converts
        raise json.JSONDecodeError("a number with too many digits", "", 0) from exc


class JsonRequest(Request):
    async def json(self) -> Any:
        """The body as JSON; FastAPI turns a `JSONDecodeError` into a validation error (a 400 naming the
        body)."""
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JsonRoute(APIRoute):
    """Reads POST bodies as JSON: without a Content-Type too, never under another media type (415)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_json(request: Request) -> Response:
            if request.method == "POST":
                content_type = request.headers.get("content-type")
                if content_type is None:
                    headers = request.scope["headers"]
                    request.scope["headers"] = [*headers, (b"content-type", JSON_MEDIA_TYPE.encode())]
                elif not is_json(content_type):
                    message = f"Content-Type must be {JSON_MEDIA_TYPE}, not {content_type!r}"
                    raise APIError(415, message, "Content-Type")
            return await handle(JsonRequest(request.scope, request.receive))

        return handle_json
