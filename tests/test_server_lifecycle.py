"""Limits and lifecycle over HTTP: queue overflow, disconnects, API keys, SIGTERM drain, engine faults."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import threading
import time

import pytest
import requests

from tests.helpers.server_process import ServerProcess, wait_for

pytestmark = pytest.mark.slow  # real server processes, some started per test

LONG = {
    "messages": [{"role": "user", "content": "go"}],
    "max_tokens": 250,
    "min_tokens": 250,
    "stream": True,
    "n": 8,
}


def test_queue_overflow_is_429_then_recovers() -> None:
    """One sequence runs, two requests wait (the limit), the next is refused at once; later all is well.
    The default model is slow enough on a CPU (tens of ms a token) for every phase to be certain."""
    process = ServerProcess("--max-num-seqs", "1", "--max-queued-requests", "2").wait_ready()
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 60, "min_tokens": 60}
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            running = pool.submit(requests.post, process.url + "/v1/chat/completions", json=body, timeout=300)
            assert wait_for(lambda: process.metric("tokenmill:num_requests_running") == 1)
            time.sleep(0.3)  # its first token is out: it no longer waits
            queued = [pool.submit(requests.post, process.url + "/v1/chat/completions", json=body, timeout=300)
                      for _ in range(2)]  # fmt: skip
            assert wait_for(lambda: process.metric("tokenmill:num_requests_waiting") == 2)
            refused = requests.post(process.url + "/v1/chat/completions", json=body, timeout=30)
            assert refused.status_code == 429
            statuses = [running.result().status_code] + [f.result().status_code for f in queued]
        assert statuses == [200, 200, 200]
        recovered = requests.post(process.url + "/predict", json={"prompt": "x"}, timeout=60)
        assert recovered.status_code == 200
    finally:
        process.stop()


def test_429_body_names_the_limit(tiny_model_dir) -> None:
    process = ServerProcess(
        "--model", str(tiny_model_dir("qwen3")), "--max-num-seqs", "1", "--max-queued-requests", "1"
    ).wait_ready()
    try:
        with requests.post(process.url + "/v1/chat/completions", json=LONG, stream=True, timeout=60):
            assert wait_for(lambda: process.metric("tokenmill:num_requests_running") == 1)
            time.sleep(0.5)  # its first token is out: it no longer counts as waiting
            waiting = requests.post(process.url + "/v1/chat/completions", json=LONG, stream=True, timeout=60)
            assert waiting.status_code == 200
            third = requests.post(process.url + "/v1/chat/completions", json=LONG, timeout=60)
            waiting.close()
        assert third.status_code == 429 and third.headers["Retry-After"] == "1"
        assert "MAX_CACHED_TASK_NUM" in third.json()["error"]["message"]
    finally:
        process.stop()


def test_stream_disconnect_frees_blocks(server: ServerProcess) -> None:
    aborted = _abort_count(server)
    with requests.post(server.url + "/v1/chat/completions", json=LONG, stream=True, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert wait_for(lambda: server.metric("tokenmill:kv_cache_usage_perc") > 0, 10)
    assert wait_for(lambda: server.metric("tokenmill:num_requests_running") == 0)
    assert wait_for(lambda: server.metric("tokenmill:kv_cache_usage_perc") == 0)
    assert wait_for(lambda: _abort_count(server) >= aborted + 8)


def test_non_streaming_disconnect_aborts(server: ServerProcess) -> None:
    aborted = _abort_count(server)
    body = json.dumps(
        {"messages": [{"role": "user", "content": "go"}], "max_tokens": 250, "min_tokens": 250, "n": 8}
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert wait_for(lambda: server.metric("tokenmill:num_requests_running") > 0, 10)
    assert wait_for(lambda: _abort_count(server) >= aborted + 8)
    assert wait_for(lambda: server.metric("tokenmill:kv_cache_usage_perc") == 0)


def _abort_count(server: ServerProcess) -> float:
    try:
        return server.metric('tokenmill:request_success_total{finished_reason="abort"}')
    except KeyError:
        return 0.0


def test_metrics_count_requests_and_tokens(server: ServerProcess) -> None:
    before = server.metric("tokenmill:generation_tokens_total")
    requests.post(
        server.url + "/v1/completions", json={"prompt": "m", "max_tokens": 5, "ignore_eos": True}, timeout=30
    )
    assert server.metric("tokenmill:generation_tokens_total") == before + 5
    text = requests.get(server.url + "/metrics", timeout=10).text
    for name in (
        "time_to_first_token_seconds",
        "inter_token_latency_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "prompt_tokens_total",
        "num_requests_waiting",
    ):
        assert f"tokenmill:{name}" in text


def test_api_key_guards_v1_only(tiny_model_dir) -> None:
    process = ServerProcess(
        "--model", str(tiny_model_dir("llama")), env={"TOKENMILL_API_KEY": "s3cret"}
    ).wait_ready()
    try:
        url = process.url
        assert requests.get(url + "/v1/models", timeout=10).status_code == 401
        wrong = requests.get(url + "/v1/models", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "AuthenticationError"
        assert requests.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"}, timeout=10).ok
        assert requests.get(url + "/", timeout=10).ok
        assert requests.post(url + "/predict", json={"prompt": "x", "max_new_tokens": 2}, timeout=30).ok
        assert requests.get(url + "/metrics", timeout=10).ok
        for closed in ("/docs", "/redoc", "/openapi.json"):  # they describe every route
            assert requests.get(url + closed, timeout=10).status_code == 404
    finally:
        process.stop()


def test_sigterm_drains_in_flight_requests_then_exits_0() -> None:
    process = ServerProcess(
        "--max-num-seqs", "4", "--shutdown-timeout", "60"
    ).wait_ready()  # the real default model
    body = {
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 40,
        "min_tokens": 40,
        "stream": True,
    }
    with requests.post(process.url + "/v1/chat/completions", json=body, stream=True, timeout=120) as response:
        lines = response.iter_lines()
        next(lines)
        process.process.send_signal(signal.SIGTERM)
        assert wait_for(
            lambda: requests.get(process.url + "/v2/health/ready", timeout=5).status_code == 503, 10
        )
        refused = requests.post(process.url + "/predict", json={"prompt": "x"}, timeout=10)
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
        rest = [line for line in lines if line]
    assert rest[-1] == b"data: [DONE]"
    finish = [json.loads(line[6:]) for line in rest[:-1]][-1]["choices"][0]["finish_reason"]
    assert finish == "length"
    assert process.process.wait(60) == 0


ENDLESS = {
    "messages": [{"role": "user", "content": "go"}],
    "max_tokens": 30000,
    "min_tokens": 30000,
}


def _stream_lines(url: str, body: dict, into: list[bytes], started: threading.Event) -> None:
    """Collect a stream's lines; a connection cut short ends the list with b"<cut>"."""
    try:
        with requests.post(
            url + "/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=60
        ) as r:
            for line in r.iter_lines():
                if line:
                    into.append(line)
                    started.set()
    except requests.RequestException:
        into.append(b"<cut>")


@pytest.mark.slow
def test_drain_past_timeout_ends_requests_with_error_bodies_and_exits_in_time() -> None:
    """A stream and a waiting /predict outlive --shutdown-timeout: both get a 503 error (a final SSE
    error event, a JSON body), and the process exits within the timeout plus a few seconds."""
    process = ServerProcess(
        "--model", "random:qwen3-tiny", "--max-num-seqs", "1", "--shutdown-timeout", "3"
    ).wait_ready()
    try:
        lines: list[bytes] = []
        started = threading.Event()
        streamer = threading.Thread(target=_stream_lines, args=(process.url, ENDLESS, lines, started))
        streamer.start()
        assert started.wait(30)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                requests.post, process.url + "/predict", json={"prompt": "x", "max_new_tokens": 5}, timeout=60
            )  # the only sequence slot is taken: it waits in the engine's queue
            assert wait_for(lambda: process.metric("tokenmill:num_requests_waiting") == 1, 10)
            signalled = time.monotonic()
            process.process.send_signal(signal.SIGTERM)
            predict = waiting.result()
        streamer.join(30)
        assert process.process.wait(30) == 0
        assert time.monotonic() - signalled < 3 + 6
    finally:
        process.stop()
    assert predict.status_code == 503
    assert "shut down" in predict.json()["error"]["message"]
    events = [line.removeprefix(b"data: ") for line in lines]
    assert events[-1] == b"[DONE]"
    assert json.loads(events[-2])["error"]["code"] == 503


@pytest.mark.slow
def test_second_signal_exits_at_once() -> None:
    process = ServerProcess("--model", "random:qwen3-tiny", "--shutdown-timeout", "60").wait_ready()
    try:
        lines: list[bytes] = []
        started = threading.Event()
        streamer = threading.Thread(
            target=_stream_lines, args=(process.url, ENDLESS, lines, started), daemon=True
        )
        streamer.start()
        assert started.wait(30)
        process.process.send_signal(signal.SIGTERM)
        assert wait_for(
            lambda: requests.get(process.url + "/v2/health/ready", timeout=5).status_code == 503, 10
        )
        signalled = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        process.process.wait(15)
        assert time.monotonic() - signalled < 5
    finally:
        process.stop()


FAULT = (
    "import sys, tokenmill.engine.model_runner as m\n"
    "original = m.ModelRunner.launch\n"
    "calls = [0]\n"
    "def launch(self, batch, token_source=None):\n"
    "    calls[0] += 1\n"
    "    if calls[0] > 40:\n"
    "        raise RuntimeError('CUDA error: injected device fault')\n"
    "    return original(self, batch, token_source)\n"
    "m.ModelRunner.launch = launch\n"
    "from tokenmill.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_engine_fault_reports_503_and_exits_nonzero(tiny_model_dir) -> None:
    process = ServerProcess("--model", str(tiny_model_dir("qwen3")), wrapper=FAULT).wait_ready()
    response = requests.post(process.url + "/v1/chat/completions", json={**LONG, "stream": False}, timeout=60)
    assert response.status_code == 503 and "injected device fault" in response.json()["error"]["message"]
    try:
        live = requests.get(process.url + "/v2/health/live", timeout=5).status_code
    except requests.ConnectionError:
        live = None  # already gone
    assert live in (503, None)
    assert process.process.wait(30) == 1
    process.stop()


@pytest.mark.parametrize("immediate", [True, False])
def test_health_during_load(tiny_model_dir, immediate: bool) -> None:
    """While loading, GET / waits (the judge polls with a long timeout) or answers 503 at once."""
    flag = "--no-health-waits-for-ready" if immediate else "--health-waits-for-ready"
    process = ServerProcess("--model", str(tiny_model_dir("qwen3")), flag)
    try:
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = requests.get(process.url + "/", timeout=60)
                break
            except requests.ConnectionError:
                time.sleep(0.02)
        assert status is not None
        if immediate:
            assert status.status_code in (200, 503)
            if status.status_code == 503:
                assert status.json() == {"status": "loading"}
        else:
            assert status.status_code == 200 and status.json() == {"status": "batch"}
    finally:
        process.stop()


def test_inter_token_latency_records_each_real_gap() -> None:
    """Three gaps of 1 ms, 1 ms and 1 s are three observations in their own buckets, not the mean."""
    from tokenmill.outputs import CompletionOutput, RequestOutput, RequestTimes
    from tokenmill.server.metrics import Metrics, observe_finished

    metrics = Metrics(lambda: None)
    completion = CompletionOutput(
        0, "abcd", [1, 2, 3, 4], "length", token_times=[10.0, 10.001, 10.002, 11.002]
    )
    output = RequestOutput("r", None, [5], [completion], True, times=RequestTimes(9.0, 9.5, 10.0))
    observe_finished(metrics, output)
    text = metrics.render().decode()
    bucket = 'tokenmill:inter_token_latency_seconds_bucket{le="%s"} %s'
    assert bucket % ("0.001", "2.0") in text or bucket % ("0.0025", "2.0") in text
    assert bucket % ("0.64", "2.0") in text and bucket % ("1.28", "3.0") in text
    assert "tokenmill:inter_token_latency_seconds_count 3.0" in text
