"""The gRPC server: started in the HTTP server's event loop, on the same engine and server state."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter
from tritonclient.grpc import service_pb2_grpc

from tokenmill.server.grpc.health import HealthServicer
from tokenmill.server.grpc.servicer import InferenceServicer
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0  # for the last answers to leave; the HTTP side's drain has already waited
SERVICE_NAMES = ("inference.GRPCInferenceService", "grpc.health.v1.Health")


async def start_grpc_server(state: ServerState) -> Callable[[], Awaitable[None]]:
    """Listen on `grpc_port`; returns the coroutine function that stops the server. Reflection is
    offered only without an API key, as the HTTP side closes its schema then."""
    config = state.config
    calls = Counter(
        "tokenmill:grpc_requests",
        "gRPC inference requests by method and status (each request of a stream counts once)",
        ["method", "code"],
        registry=state.metrics.registry,
    )
    options = [
        # a message larger than an HTTP body may be is refused (RESOURCE_EXHAUSTED)
        ("grpc.max_receive_message_length", config.max_body_bytes),
        # a port in use fails the start-up, as HTTP's does, instead of sharing the port with another server
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state, calls), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(state), server)
    if config.api_key is None:
        reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    logger.info("gRPC (Open Inference Protocol v2) listening on %s", address)

    async def stop() -> None:
        await server.stop(STOP_GRACE_SECONDS)

    return stop
