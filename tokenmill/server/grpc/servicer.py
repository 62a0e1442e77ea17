"""`inference.GRPCInferenceService`: the Open Inference Protocol v2 and Triton's `ModelStreamInfer`.

Every request goes through the server state the HTTP endpoints use (admission, limits, timeouts,
metrics), so it counts in the queue and in the drain on SIGTERM like any HTTP request. A client that
cancels its call cancels the tasks generating for it, which aborts their engine requests and frees
their KV blocks.

`ModelStreamInfer` is decoupled: the requests of one stream run concurrently and each may be answered
many times; the last answer of each carries `triton_final_response = true` (or, if the request set
`triton_enable_empty_final_response`, an empty answer after it does). A request the server refuses is
answered with the stream's `error_message`, except that a FastDeploy request answers its errors
in-band once its JSON is understood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from prometheus_client import Counter
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tokenmill.server.errors import APIError
from tokenmill.server.grpc import metadata
from tokenmill.server.grpc.jobs import Job, check_model, parse_request
from tokenmill.server.grpc.status import require_api_key, status_code
from tokenmill.server.grpc.tensors import bytes_response
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)

Emit = Callable[[pb.ModelStreamInferResponse], None]
RunOne = Callable[[pb.ModelInferRequest, Emit], Coroutine[Any, Any, None]]


async def answers(state: ServerState, job: Job, stream: bool) -> AsyncIterator[tuple[bytes, bool]]:
    """A job's answers, each with whether it is the last: every new piece of text when `stream`,
    else the whole text once."""
    prompt, params = await job.prepare(state)
    state.refuse_early([prompt], params)
    with state.admit() as ticket:
        outputs = state.generate(
            prompt, params, "grpc", ticket, job.timeout, job.request_id, stream=stream, lora=job.lora
        )
        if not stream:
            yield job.whole(await state.final_output(outputs)), True
            return
        async for output in outputs:
            completion = output.outputs[0]
            if completion.delta_text or completion.finished:
                yield job.piece(output, completion), completion.finished


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServerState, calls: Counter) -> None:
        self.state = state
        self.config = state.config
        self.calls = calls  # by method and gRPC status; a streamed request counts once

    # ---- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.config, health=True)
        return pb.ServerLiveResponse(live=self.state.lifecycle.alive)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.config, health=True)
        return pb.ServerReadyResponse(ready=self.state.lifecycle.is_ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.config, health=True)
        try:
            check_model(request.name, request.version, self.state)
        except APIError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.state.lifecycle.is_ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.config)
        return metadata.server_metadata()

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.config)
        await self._check_model(request.name, request.version, context)
        return metadata.model_metadata(self.state.model_name)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext):
        await require_api_key(context, self.config)
        await self._check_model(request.name, request.version, context)
        return metadata.model_config(self.state.model_name)

    async def _check_model(self, name: str, version: str, context: grpc.aio.ServicerContext) -> None:
        try:
            check_model(name, version, self.state)
        except APIError as exc:
            await context.abort(status_code(exc.status), exc.message)

    # ---- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext):
        """One whole answer, whether or not the request asks to stream."""
        await require_api_key(context, self.config)
        code = grpc.StatusCode.OK
        try:
            job = parse_request(request, self.state)
            async with contextlib.aclosing(answers(self.state, job, stream=False)) as whole:
                payload, _ = await anext(whole)
            return bytes_response(request, self.state.model_name, job.output, payload, None)
        except APIError as exc:
            code = status_code(exc.status)
            await context.abort(code, exc.message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.UNKNOWN  # what grpcio answers for an exception it did not expect
            raise
        finally:
            self.calls.labels("ModelInfer", code.name).inc()

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        await require_api_key(context, self.config)
        async for response in _StreamCall(self._stream_one).run(request_iterator):
            yield response

    async def _stream_one(self, request: pb.ModelInferRequest, emit: Emit) -> None:
        """Run one request of a stream, emitting each of its answers as it comes."""
        model = self.state.model_name
        empty_final = _flag(request, "triton_enable_empty_final_response")
        job: Job | None = None
        code = grpc.StatusCode.OK
        try:
            job = parse_request(request, self.state)
            async for payload, last in answers(self.state, job, stream=job.stream):
                emit(_streamed(bytes_response(request, model, job.output, payload, last and not empty_final)))
            if empty_final:
                emit(_streamed(bytes_response(request, model, None, b"", True)))
        except APIError as exc:
            code = status_code(exc.status)
            if job is not None and (in_band := job.failure(exc)) is not None:
                emit(_streamed(bytes_response(request, model, job.output, in_band, True)))
            else:
                emit(_stream_error(request, model, exc.message))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            logger.exception("a streamed gRPC request failed")
            emit(_stream_error(request, model, f"internal error: {exc!r}"))
        finally:
            self.calls.labels("ModelStreamInfer", code.name).inc()


class _StreamCall:
    """One `ModelStreamInfer` call: requests are read as they arrive and run concurrently, and their
    answers leave in the order they are made. The call ends once the client has stopped sending and
    every request is answered; if the call is cancelled, so is every request still running."""

    def __init__(self, run_one: RunOne) -> None:
        self.run_one = run_one
        self.outbox: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.open = 1  # the reader, and each request while it runs; each puts None when it ends
        self.tasks: set[asyncio.Task] = set()

    async def run(
        self, requests: AsyncIterator[pb.ModelInferRequest]
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while self.open:
                response = await self.outbox.get()
                if response is None:
                    self.open -= 1
                else:
                    yield response
        finally:
            for task in (reader, *self.tasks):
                task.cancel()
            await asyncio.gather(reader, *self.tasks, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        try:
            async for request in requests:
                self.open += 1
                task = asyncio.create_task(self.run_one(request, self.outbox.put_nowait))
                self.tasks.add(task)
                task.add_done_callback(self._ended)
        finally:
            self.outbox.put_nowait(None)

    def _ended(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.outbox.put_nowait(None)


def _streamed(response: pb.ModelInferResponse) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(infer_response=response)


def _stream_error(request: pb.ModelInferRequest, model: str, message: str) -> pb.ModelStreamInferResponse:
    """A request's error in a stream: the message, and an empty final answer naming the request."""
    final = bytes_response(request, model, None, b"", True)
    return pb.ModelStreamInferResponse(error_message=message, infer_response=final)


def _flag(request: pb.ModelInferRequest, name: str) -> bool:
    parameter = request.parameters.get(name)
    return parameter is not None and parameter.bool_param
