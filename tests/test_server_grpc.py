"""gRPC (Open Inference Protocol v2 + Triton's ModelStreamInfer) against a real server process, spoken
to by the real tritonclient and grpcio-health-checking clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.server_process import ServerProcess, wait_for
from tokenmill.eval.local_server import free_port

pytestmark = pytest.mark.slow  # real server processes

LIMITS = ("--max-input-tokens", "400", "--max-dec-len", "256", "--max-queued-requests", "1000")


class GrpcServer:
    """A server process with HTTP and gRPC, and a Triton client of its gRPC port."""

    def __init__(self, model_dir: str, *flags: str) -> None:
        self.grpc_port = free_port()
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.model = "tiny-qwen3"
        self.process = ServerProcess(
            "--model",
            model_dir,
            "--served-model-name",
            self.model,
            *LIMITS,
            "--grpc-port",
            str(self.grpc_port),
            *flags,
        )
        self.process.wait_ready()
        self.client = triton.InferenceServerClient(self.address)

    def metric(self, name: str) -> float:
        """A metric's value; a labelled counter not yet incremented reads 0."""
        try:
            return self.process.metric(name)
        except KeyError:
            return 0.0


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> Iterator[GrpcServer]:
    running = GrpcServer(str(tiny_model_dir("qwen3")))
    yield running
    running.client.close()
    running.process.stop()


def bytes_input(name: str, value: bytes | str) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode() if isinstance(value, str) else value], dtype=object))
    return tensor


def fastdeploy_input(**fields: Any) -> triton.InferInput:
    return bytes_input("IN", json.dumps(fields))


def text(result: triton.InferResult, output: str = "text_output") -> str:
    return result.as_numpy(output)[0].decode()


def is_final(result: triton.InferResult) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def http_greedy(server: GrpcServer, prompt: str, max_tokens: int) -> str:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    answer = requests.post(server.process.url + "/v1/completions", json=body, timeout=60).json()
    return answer["choices"][0]["text"]


def collect_stream(
    client: triton.InferenceServerClient, send: Callable[[], None], expected_finals: int, timeout: float = 60
) -> list[tuple[triton.InferResult | None, InferenceServerException | None]]:
    """Everything a stream answers until `expected_finals` requests ended (a final answer or an error)."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        send()
        received, finals = [], 0
        while finals < expected_finals:
            result, error = answers.get(timeout=timeout)
            received.append((result, error))
            finals += error is not None or is_final(result)
        return received
    finally:
        client.stop_stream()


# ---- metadata and health --------------------------------------------------------------------------


def test_live_ready_and_metadata(server: GrpcServer) -> None:
    client = server.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(server.model) and client.is_model_ready(server.model, "1")
    assert not client.is_model_ready("no-such-model")
    assert client.get_server_metadata().name == "tokenmill"
    metadata = client.get_model_metadata(server.model)
    assert metadata.name == server.model and list(metadata.versions) == ["1"]
    inputs = {tensor.name: tensor.datatype for tensor in metadata.inputs}
    assert inputs["IN"] == inputs["text_input"] == "BYTES" and inputs["max_tokens"] == "INT32"
    assert {tensor.name for tensor in metadata.outputs} == {"OUT", "text_output"}
    config = client.get_model_config(server.model).config
    assert config.model_transaction_policy.decoupled
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "no-such-model" in unknown.value.message()


def test_grpc_health_and_reflection(server: GrpcServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "live"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = reflection.ServerReflectionInfo(iter([request]), timeout=10)
        services = {service.name for service in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


# ---- inference ------------------------------------------------------------------------------------


def test_unary_fastdeploy_and_text_styles(server: GrpcServer) -> None:
    result = server.client.infer(
        server.model,
        [fastdeploy_input(text="hello", req_id="unary-1", max_dec_len=6, min_dec_len=6, return_usage=True)],
        request_id="r1",
    )
    answer = json.loads(text(result, "OUT"))
    assert answer["req_id"] == "unary-1" and answer["is_end"] == 1 and answer["error_code"] == 0
    assert answer["usage"]["completion_tokens"] == 6 and answer["tokens_all"]
    assert result.get_response().id == "r1"

    settings = {"max_tokens": 7, "ignore_eos": True, "sampling_parameters": json.dumps({"temperature": 0})}
    result = server.client.infer(server.model, [bytes_input("text_input", "The sky is")], parameters=settings)
    assert text(result) == http_greedy(server, "The sky is", 7)


def test_streamed_pieces_concatenate_to_the_http_greedy_text(server: GrpcServer) -> None:
    prompt, length = "Once upon a time", 24
    inputs = [bytes_input("text_input", prompt)]
    for name, datatype, value in (("max_tokens", "INT32", length), ("temperature", "FP32", 0.0)):
        tensor = triton.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(np.array([value], dtype=np.int32 if datatype == "INT32" else np.float32))
        inputs.append(tensor)

    def send() -> None:
        server.client.async_stream_infer(
            server.model, inputs, request_id="s1", parameters={"stream": True, "ignore_eos": True}
        )

    answers = collect_stream(server.client, send, expected_finals=1)
    assert all(error is None for _, error in answers)
    pieces = [text(result) for result, _ in answers]
    assert len(pieces) > 1 and [is_final(result) for result, _ in answers] == [False] * (len(pieces) - 1) + [
        True
    ]
    assert all(result.get_response().id == "s1" for result, _ in answers)
    assert "".join(pieces) == http_greedy(server, prompt, length)


def test_fastdeploy_stream_matches_http_fastdeploy(server: GrpcServer) -> None:
    """The same seeded FastDeploy request answers the same text over gRPC and HTTP."""
    fields = {"text": "你好", "max_dec_len": 12, "min_dec_len": 12, "seed": 7, "return_usage": True}

    def send() -> None:
        server.client.async_stream_infer(
            server.model, [fastdeploy_input(**fields, stream=True, req_id="fd-s")]
        )

    lines = [json.loads(text(result, "OUT")) for result, _ in collect_stream(server.client, send, 1)]
    assert [line["send_idx"] for line in lines] == list(range(len(lines)))
    assert [line["is_end"] for line in lines] == [0] * (len(lines) - 1) + [1]
    assert all(line["req_id"] == "fd-s" and line["error_code"] == 0 for line in lines)
    assert lines[-1]["usage"]["completion_tokens"] == 12
    http = requests.post(server.process.url + "/v1/chat/completions", json=fields, timeout=60).json()
    assert "".join(line["token"] for line in lines) == lines[-1]["tokens_all"] == http["tokens_all"]


def test_empty_final_response_when_asked(server: GrpcServer) -> None:
    def send() -> None:
        parameters = {"max_tokens": 3, "stream": True, "triton_enable_empty_final_response": True}
        server.client.async_stream_infer(
            server.model, [bytes_input("text_input", "hi")], parameters=parameters
        )

    answers = [result for result, _ in collect_stream(server.client, send, 1)]
    assert not any(is_final(result) for result in answers[:-1])
    assert is_final(answers[-1]) and not answers[-1].get_response().outputs


def test_a_hundred_concurrent_streams(server: GrpcServer) -> None:
    async def one(client: triton_aio.InferenceServerClient, index: int) -> list[dict]:
        async def requests_():
            fields = {"text": f"question {index}", "max_dec_len": 8, "min_dec_len": 8, "stream": True}
            yield {
                "model_name": server.model,
                "inputs": [fastdeploy_input(**fields, return_usage=True)],
                "request_id": str(index),
            }

        lines = []
        async for result, error in client.stream_infer(requests_()):
            assert error is None, error
            lines.append(json.loads(text(result, "OUT")))
            if is_final(result):
                return lines
        raise AssertionError("the stream ended without a final answer")

    async def run() -> list[list[dict]]:
        client = triton_aio.InferenceServerClient(server.address)
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(100))), 240)
        finally:
            await client.close()

    for lines in asyncio.run(run()):
        assert lines[-1]["is_end"] == 1 and lines[-1]["usage"]["completion_tokens"] == 8
        assert "".join(line["token"] for line in lines) == lines[-1]["tokens_all"]
    assert server.metric("tokenmill:num_requests_running") == 0


def test_cancelled_stream_aborts_and_frees_its_kv_blocks(server: GrpcServer) -> None:
    aborted = server.metric('tokenmill:request_success_total{finished_reason="abort"}')
    answers: queue.Queue = queue.Queue()
    client = triton.InferenceServerClient(server.address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    fields = {"text": "go on", "max_dec_len": 250, "min_dec_len": 250, "stream": True}
    client.async_stream_infer(server.model, [fastdeploy_input(**fields)])
    first, error = answers.get(timeout=60)
    assert error is None and not is_final(first)
    assert server.metric("tokenmill:kv_cache_usage_perc") > 0
    client.stop_stream(cancel_requests=True)
    client.close()
    assert wait_for(lambda: server.metric("tokenmill:kv_cache_usage_perc") == 0)
    assert server.metric("tokenmill:num_requests_running") == 0
    assert server.metric('tokenmill:request_success_total{finished_reason="abort"}') == aborted + 1
    cancelled = 'tokenmill:grpc_requests_total{code="CANCELLED",method="ModelStreamInfer"}'
    assert wait_for(lambda: server.metric(cancelled) >= 1)


def test_a_unary_call_that_times_out_on_the_client_is_aborted(server: GrpcServer) -> None:
    aborted = server.metric('tokenmill:request_success_total{finished_reason="abort"}')
    # 256 tokens take the tiny model 0.5 s or more on an idle 2-core CPU (a 0.5 s deadline was once met):
    # the deadline falls mid-answer, after admission
    fields = {"text": "go on", "max_dec_len": 256, "min_dec_len": 256}
    with pytest.raises(InferenceServerException) as late:
        server.client.infer(server.model, [fastdeploy_input(**fields)], client_timeout=0.2)
    assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert wait_for(
        lambda: server.metric('tokenmill:request_success_total{finished_reason="abort"}') == aborted + 1
    )
    assert wait_for(lambda: server.metric("tokenmill:kv_cache_usage_perc") == 0)


def test_a_live_req_id_is_refused_over_http_too(server: GrpcServer) -> None:
    """One FastDeploy req_id runs once, whichever protocol carries it."""
    answers: queue.Queue = queue.Queue()
    client = triton.InferenceServerClient(server.address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    fields = {"text": "go on", "max_dec_len": 250, "min_dec_len": 250, "stream": True, "req_id": "shared-id"}
    client.async_stream_infer(server.model, [fastdeploy_input(**fields)])
    assert answers.get(timeout=60)[1] is None
    clash = requests.post(
        server.process.url + "/v1/chat/completions", json={"text": "x", "req_id": "shared-id"}, timeout=30
    )
    client.stop_stream(cancel_requests=True)
    client.close()
    assert clash.status_code == 400 and "shared-id" in clash.json()["error_msg"]
    assert wait_for(lambda: server.metric("tokenmill:num_requests_running") == 0)  # the stream was aborted


# ---- malformed requests -----------------------------------------------------------------------------


def refused(server: GrpcServer, inputs: list[triton.InferInput], model: str | None = None, **kw: Any):
    with pytest.raises(InferenceServerException) as caught:
        server.client.infer(model or server.model, inputs, **kw)
    return caught.value.status(), caught.value.message()


def test_malformed_unary_requests_name_the_problem(server: GrpcServer) -> None:
    status, message = refused(server, [bytes_input("IN", "{not json")])
    assert status == "StatusCode.INVALID_ARGUMENT" and "IN is not valid JSON" in message
    for text, reason in (("[" * 100_000, "nested too deeply"), ('{"seed": ' + "9" * 5000 + "}", "digits")):
        status, message = refused(server, [bytes_input("IN", text)])
        assert status == "StatusCode.INVALID_ARGUMENT" and reason in message, message
    status, message = refused(server, [fastdeploy_input(text="hi", max_dec_len="ten")])
    assert status == "StatusCode.INVALID_ARGUMENT" and "max_dec_len" in message
    status, message = refused(server, [fastdeploy_input(text="hi", max_dec_len=100_000)])
    assert status == "StatusCode.INVALID_ARGUMENT" and "MAX_DEC_LEN" in message
    wrong_type = triton.InferInput("IN", [1], "INT32")
    wrong_type.set_data_from_numpy(np.array([3], dtype=np.int32))
    status, message = refused(server, [wrong_type])
    assert status == "StatusCode.INVALID_ARGUMENT" and "IN" in message and "BYTES" in message
    status, message = refused(server, [bytes_input("prompt", "hi")])
    assert status == "StatusCode.INVALID_ARGUMENT" and "IN" in message and "text_input" in message
    status, message = refused(server, [bytes_input("text_input", "hi")], model="no-such-model")
    assert status == "StatusCode.NOT_FOUND" and "no-such-model" in message
    status, message = refused(server, [bytes_input("text_input", "hi")], parameters={"top_k": -5})
    assert status == "StatusCode.INVALID_ARGUMENT" and "top_k" in message
    status, message = refused(server, [bytes_input("text_input", b"\xff\xfe")])
    assert status == "StatusCode.INVALID_ARGUMENT" and "UTF-8" in message


def test_malformed_streamed_requests_are_answered_and_the_stream_serves_on(server: GrpcServer) -> None:
    def send() -> None:
        server.client.async_stream_infer(server.model, [bytes_input("IN", "[1, 2")], request_id="bad-json")
        server.client.async_stream_infer("no-such-model", [bytes_input("text_input", "hi")])
        too_long = fastdeploy_input(text="hi", max_dec_len=300, req_id="too-long", stream=True)
        server.client.async_stream_infer(server.model, [too_long])
        server.client.async_stream_infer(
            server.model, [bytes_input("text_input", "hi")], parameters={"max_tokens": 2}, request_id="ok"
        )

    answers = collect_stream(server.client, send, expected_finals=4)
    errors = sorted(error.message() for _, error in answers if error is not None)
    assert len(errors) == 2
    assert "IN is not valid JSON" in errors[0] and "no-such-model" in errors[1]
    results = {result.get_response().id or "fd": result for result, error in answers if error is None}
    in_band = json.loads(text(results["fd"], "OUT"))  # FastDeploy's errors come in its own shape
    assert in_band["req_id"] == "too-long" and in_band["error_code"] == 400 and in_band["is_end"] == 1
    assert "max_dec_len" in in_band["error_msg"]
    assert is_final(results["ok"])


def test_a_message_over_the_body_limit_is_refused(server: GrpcServer) -> None:
    status, message = refused(server, [fastdeploy_input(text="x" * (9 << 20))])  # the limit is 8 MiB
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "larger than max" in message


# ---- API key, lifecycle, packaging --------------------------------------------------------------------


def test_a_grpc_port_in_use_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another gRPC server's socket
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = ServerProcess("--grpc-port", str(taken.getsockname()[1]))
        try:
            with pytest.raises(RuntimeError, match="Failed to bind to address"):
                process.wait_ready(120)
        finally:
            process.stop()


def test_api_key_is_enforced(tiny_model_dir) -> None:
    server = GrpcServer(str(tiny_model_dir("qwen3")), "--api-key", "sesame")
    try:
        client, inputs = server.client, [bytes_input("text_input", "hi")]
        assert client.is_server_ready()  # health stays open, as over HTTP
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as denied:
                client.infer(server.model, inputs, headers=headers, parameters={"max_tokens": 2})
            assert denied.value.status() == "StatusCode.UNAUTHENTICATED"
            assert "Bearer" in denied.value.message()
        with pytest.raises(InferenceServerException):
            client.get_model_metadata(server.model)
        result = client.infer(
            server.model, inputs, headers={"authorization": "Bearer sesame"}, parameters={"max_tokens": 2}
        )
        assert text(result) is not None
        answers: queue.Queue = queue.Queue()
        client.start_stream(
            callback=lambda result, error: answers.put(error), headers={"authorization": "Bearer x"}
        )
        with contextlib.suppress(InferenceServerException):  # the server may have ended the stream already
            client.async_stream_infer(server.model, inputs)
        assert "UNAUTHENTICATED" in str(answers.get(timeout=30))
        client.stop_stream()
    finally:
        server.client.close()
        server.process.stop()


def test_sigterm_drains_grpc_streams(tiny_model_dir) -> None:
    """Ready turns false at once, a new request is refused, the running stream ends whole, exit 0."""
    server = GrpcServer(str(tiny_model_dir("qwen3")), "--max-num-seqs", "1")
    try:
        answers: queue.Queue = queue.Queue()
        server.client.start_stream(callback=lambda result, error: answers.put((result, error)))
        fields = {"text": "go", "max_dec_len": 250, "min_dec_len": 250, "stream": True, "return_usage": True}
        server.client.async_stream_infer(server.model, [fastdeploy_input(**fields)])
        assert answers.get(timeout=60)[1] is None
        server.process.process.send_signal(signal.SIGTERM)
        probe = triton.InferenceServerClient(server.address)
        assert wait_for(lambda: not probe.is_server_ready(), timeout=10)
        with grpc.insecure_channel(server.address) as channel:
            status = (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            )
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(InferenceServerException) as refused_:
            probe.infer(server.model, [bytes_input("text_input", "hi")])
        assert refused_.value.status() == "StatusCode.UNAVAILABLE"
        probe.close()
        while True:
            result, error = answers.get(timeout=60)
            assert error is None
            if is_final(result):
                break
        assert json.loads(text(result, "OUT"))["usage"]["completion_tokens"] == 250
        server.client.stop_stream()
        assert server.process.process.wait(60) == 0
    finally:
        server.client.close()
        server.process.stop()
