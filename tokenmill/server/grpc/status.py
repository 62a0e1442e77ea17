"""gRPC's side of the server's errors and API key: the status each HTTP status becomes, and the guard."""

from __future__ import annotations

import grpc

from tokenmill.config import ServerConfig
from tokenmill.server.api_key import MISSING_KEY_MESSAGE, authorized

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status of an error the HTTP side answers with `http_status`."""
    default = grpc.StatusCode.INTERNAL if http_status >= 500 else grpc.StatusCode.UNKNOWN
    return _CODES.get(http_status, default)


async def require_api_key(
    context: grpc.aio.ServicerContext, config: ServerConfig, health: bool = False
) -> None:
    """Abort the call unless its `authorization` metadata carries the API key. Health calls need it
    only with `api_key_everywhere`, as the HTTP health endpoints do."""
    if health and not config.api_key_everywhere:
        return
    metadata = {key: value for key, value in context.invocation_metadata() or ()}
    if not authorized(metadata.get("authorization"), config.api_key):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, MISSING_KEY_MESSAGE)
