"""`grpc.health.v1.Health`, answered from the server's state at each call, so that it follows the HTTP
health endpoints exactly: Kubernetes' gRPC probes and grpc_health_probe read it.

Service "" (the server), "ready" and `inference.GRPCInferenceService` are SERVING when the model is
warm and the server is not draining (HTTP's /v2/health/ready); "live" is SERVING while the process
and its engine run (HTTP's /v2/health/live).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenmill.server.grpc.status import require_api_key
from tokenmill.server.state import ServerState

INFERENCE_SERVICE = "inference.GRPCInferenceService"
READINESS_SERVICE = "ready"
LIVENESS_SERVICE = "live"
WATCH_POLL_SECONDS = 0.5

Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        lifecycle = state.lifecycle
        ready: Callable[[], bool] = lambda: lifecycle.is_ready  # noqa: E731
        self.checks: dict[str, Callable[[], bool]] = {
            "": ready,
            READINESS_SERVICE: ready,
            INFERENCE_SERVICE: ready,
            LIVENESS_SERVICE: lambda: lifecycle.alive,
        }

    def status(self, service: str) -> Status:
        check = self.checks.get(service)
        if check is None:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        return (
            health_pb2.HealthCheckResponse.SERVING if check() else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.state.config, health=True)
        if request.service not in self.checks:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        await require_api_key(context, self.state.config, health=True)
        last = None
        while True:
            status = self.status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_POLL_SECONDS)

    async def List(self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.state.config, health=True)
        statuses = {name: health_pb2.HealthCheckResponse(status=self.status(name)) for name in self.checks}
        return health_pb2.HealthListResponse(statuses=statuses)
