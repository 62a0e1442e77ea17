"""Hostile requests against a real server: none may freeze it, and liveness answers within a second
while each runs (polled from a thread during the request)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow

LIVENESS_LIMIT = 1.0
ENDLESS_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"


class LivenessProbe:
    """Polls the liveness routes from a thread, every 0.1 s for at most `max_seconds`, and keeps the
    slowest answer (a timeout or an error counts as `slowest = inf`)."""

    def __init__(self, url: str, max_seconds: float = 60.0) -> None:
        self.url = url
        self.max_seconds = max_seconds
        self.slowest = 0.0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            for route in ("/v2/health/live", "/health"):
                started = time.monotonic()
                try:
                    ok = requests.get(self.url + route, timeout=5).status_code == 200
                except requests.RequestException:
                    ok = False
                self.slowest = max(self.slowest, time.monotonic() - started if ok else float("inf"))
                self.polls += 1
            self._stop.wait(0.1)


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[ServerProcess]:
    process = ServerProcess(
        "--model", "random:qwen3-tiny", "--max-model-len", "2048", "--header-read-timeout", "2"
    ).wait_ready()
    yield process
    process.stop()


def _post(
    server: ServerProcess, path: str, body: object, timeout: float = 30, limit: float = LIVENESS_LIMIT
) -> requests.Response:
    with LivenessProbe(server.url) as probe:
        time.sleep(0.3)  # the probe is polling before the request arrives
        response = requests.post(server.url + path, json=body, timeout=timeout)
        time.sleep(0.3)
    assert probe.polls >= 4
    assert probe.slowest < limit, f"liveness took {probe.slowest:.2f}s during {path}"
    return response


def _error_param(response: requests.Response) -> str:
    return response.json()["error"]["param"]


def test_caller_chat_template_is_refused_by_default(hostile_server: ServerProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "chat_template_kwargs": {"chat_template": ENDLESS_TEMPLATE},
    }
    response = _post(hostile_server, "/v1/chat/completions", body, timeout=20)
    assert response.status_code == 400
    assert _error_param(response) == "chat_template_kwargs.chat_template"
    assert "--allow-request-chat-template" in response.json()["error"]["message"]


def test_huge_predict_prompt_is_cut_without_freezing(hostile_server: ServerProcess) -> None:
    prompt = "lorem ipsum " * 660_000  # 7.9 MB, under the 8 MiB body limit
    response = _post(hostile_server, "/predict", {"prompt": prompt, "max_new_tokens": 2}, timeout=60)
    assert response.status_code == 200 and isinstance(response.json()["response"], str)


def test_huge_predict_system_prompt_is_refused(hostile_server: ServerProcess) -> None:
    body = {"prompt": "hi", "system_prompt": "s" * 7_000_000, "max_new_tokens": 2}
    response = _post(hostile_server, "/predict", body)
    assert response.status_code == 400 and _error_param(response) == "system_prompt"


def test_huge_tokenize_text_is_refused_before_tokenizing(hostile_server: ServerProcess) -> None:
    response = _post(hostile_server, "/tokenize", {"prompt": "a" * 7_000_000})
    assert response.status_code == 400 and _error_param(response) == "prompt"
    assert "characters" in response.json()["error"]["message"]


def test_too_many_predict_prompts_are_refused(hostile_server: ServerProcess) -> None:
    response = _post(hostile_server, "/predict", {"prompt": ["hi"] * 50_000, "max_new_tokens": 1})
    assert response.status_code == 400 and _error_param(response) == "prompt"
    assert "at most 16384" in response.json()["error"]["message"]


def test_too_many_completion_token_lists_are_refused(hostile_server: ServerProcess) -> None:
    # Decoding and validating the 1 MB body still happen on the event loop (FastAPI's parser, bounded
    # by --max-body-bytes): ~0.3 s on an idle 2-core machine, several times that on a loaded one.
    body = {"prompt": [[1, 2]] * 100_000, "max_tokens": 1}
    response = _post(hostile_server, "/v1/completions", body, limit=3 * LIVENESS_LIMIT)
    assert response.status_code == 400 and _error_param(response) == "prompt"


SLOW_DECODE = (
    "import sys, time, tokenmill.tokenizer as t\n"
    "original = t.Tokenizer.decode\n"
    "def decode(self, token_ids, *args, **kwargs):\n"
    "    if token_ids[:3] == [99, 98, 97]:\n"
    "        time.sleep(3)\n"
    "    return original(self, token_ids, *args, **kwargs)\n"
    "t.Tokenizer.decode = decode\n"
    "from tokenmill.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_detokenize_decodes_off_the_event_loop() -> None:
    """A decode that takes seconds (a body's worth of ids: 1.2M of a 151k vocabulary took 0.7 s) runs on
    a prompt thread, so liveness answers meanwhile; ids outside the vocabulary are a 400 naming tokens."""
    server = ServerProcess("--model", "random:qwen3-tiny", "--no-warmup", wrapper=SLOW_DECODE).wait_ready()
    try:
        response = _post(server, "/detokenize", {"tokens": [99, 98, 97, 72, 105]}, limit=LIVENESS_LIMIT)
        assert response.status_code == 200 and isinstance(response.json()["prompt"], str), response.text
        response = requests.post(server.url + "/detokenize", json={"tokens": [1, 512]}, timeout=10)
        assert response.status_code == 400 and _error_param(response) == "tokens"
        assert "[0, 512) (this model's vocabulary); got 512" in response.json()["error"]["message"]
    finally:
        server.stop()


def test_predict_max_new_tokens_has_a_default_cap(hostile_server: ServerProcess) -> None:
    response = _post(hostile_server, "/predict", {"prompt": "x", "max_new_tokens": 5000})
    assert response.status_code == 400 and _error_param(response) == "max_new_tokens"
    assert "--predict-max-new-tokens" in response.json()["error"]["message"]


def test_head_root_answers_like_get(hostile_server: ServerProcess) -> None:
    response = requests.head(hostile_server.url + "/", timeout=10)
    assert response.status_code == 200 and response.content == b""


def _closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (trickling one byte of `trickle` every 0.5 s), or None
    if it is still open after `within` seconds."""
    started = time.monotonic()
    sock.settimeout(0.5)
    for index in range(int(within / 0.5)):
        if index < len(trickle):
            try:
                sock.sendall(trickle[index : index + 1])
            except OSError:
                return time.monotonic() - started
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


@pytest.mark.parametrize("trickle", [b"", b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40])
def test_slow_or_silent_connections_are_closed(hostile_server: ServerProcess, trickle: bytes) -> None:
    with socket.create_connection(("127.0.0.1", hostile_server.port)) as sock:
        closed_after = _closed_by_server(sock, within=8.0, trickle=trickle)
    assert closed_after is not None and closed_after < 5.0


def test_predict_disconnect_logs_one_line(hostile_server: ServerProcess) -> None:
    body = b'{"prompt": ["go", "on", "and on"], "max_new_tokens": 2000}'
    before = hostile_server.log().count("left before POST /predict")
    with socket.create_connection(("127.0.0.1", hostile_server.port)) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(1.0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and hostile_server.log().count("left before POST /predict") == before:
        time.sleep(0.2)
    log = hostile_server.log()
    assert log.count("left before POST /predict") == before + 1
    assert "Traceback" not in log and "ERROR" not in log


def test_timeout_and_invalid_requests_are_not_counted_as_aborts(hostile_server: ServerProcess) -> None:
    def count(name: str) -> float:
        try:
            return hostile_server.metric(name)
        except KeyError:
            return 0.0

    aborts = 'tokenmill:request_success_total{finished_reason="abort"}'
    timeouts = 'tokenmill:request_failure_total{reason="timeout"}'
    before_aborts, before_timeouts = count(aborts), count(timeouts)
    slow = {"text": "x", "max_dec_len": 2000, "min_dec_len": 2000, "timeout": 0.05}
    response = requests.post(hostile_server.url + "/v1/chat/completions", json=slow, timeout=30)
    assert response.status_code == 408
    assert count(timeouts) == before_timeouts + 1
    assert count(aborts) == before_aborts

    invalid = 'tokenmill:request_failure_total{reason="invalid"}'
    before_invalid = count(invalid)
    first = {"text": "x", "req_id": "clash", "max_dec_len": 2000, "min_dec_len": 2000, "stream": True}
    url = hostile_server.url + "/v1/chat/completions"
    with requests.post(url, json=first, stream=True, timeout=30) as running:
        lines = running.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        clash = requests.post(url, json={"text": "x", "req_id": "clash"}, timeout=30)
        assert clash.status_code == 400 and "clash" in clash.json()["error_msg"]
        assert count(invalid) == before_invalid + 1
        assert count(aborts) == before_aborts


def test_allowed_endless_template_keeps_liveness_and_exit_prompt() -> None:
    process = ServerProcess(
        "--model", "random:qwen3-tiny", "--allow-request-chat-template", "--shutdown-timeout", "2"
    ).wait_ready()
    try:
        body = {
            "messages": [{"role": "user", "content": "hi"}],
            "chat_template_kwargs": {"chat_template": ENDLESS_TEMPLATE},
        }
        with LivenessProbe(process.url, max_seconds=10) as probe:
            with pytest.raises(requests.Timeout):  # the operator's choice: it runs, on a worker thread
                requests.post(process.url + "/v1/chat/completions", json=body, timeout=3)
            time.sleep(1.0)
        assert probe.polls >= 8 and probe.slowest < LIVENESS_LIMIT
        started = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(15) == 0
        assert time.monotonic() - started < 2 + 5
    finally:
        process.stop()
