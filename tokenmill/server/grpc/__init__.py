"""gRPC beside HTTP (`--grpc-port`): KServe's Open Inference Protocol v2 with Triton's streaming
extension, grpc.health.v1 and reflection. Needs the optional `tokenmill[grpc]` dependencies; nothing
imports this package unless a gRPC port is configured."""

from __future__ import annotations

try:
    import grpc  # noqa: F401
    import grpc_health  # noqa: F401
    import grpc_reflection  # noqa: F401
    import tritonclient.grpc  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"--grpc-port needs the gRPC dependencies ({exc.name} is missing): pip install 'tokenmill[grpc]'"
    ) from exc

from tokenmill.server.grpc.server import start_grpc_server

__all__ = ["start_grpc_server"]
