"""FastDeploy-style requests on /v1/chat/completions, answered in FastDeploy's shapes."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow  # real server process


def test_streamed_lines(server: ServerProcess) -> None:
    body = {
        "text": "你好",
        "req_id": "fd-stream",
        "max_dec_len": 12,
        "stream": True,
        "return_usage": True,
        "min_dec_len": 12,
    }
    with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["send_idx"] for line in lines] == list(range(len(lines)))
    assert all(line["error_code"] == 0 and line["req_id"] == "fd-stream" for line in lines)
    assert [line["is_end"] for line in lines] == [0] * (len(lines) - 1) + [1]
    assert "".join(line["token"] for line in lines) == lines[-1]["tokens_all"]
    assert lines[-1]["usage"]["completion_tokens"] == 12


def test_whole_answer_with_messages(server: ServerProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": "List 3 colors."}],
        "max_dec_len": 8,
        "topp": 0.5,
        "temperature": 0.1,
        "penalty_score": 1.1,
        "frequency_score": 0.1,
        "presence_score": 0.1,
        "return_usage": True,
    }
    answer = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert answer["error_code"] == 0 and answer["error_msg"] == ""
    assert isinstance(answer["tokens_all"], str) and answer["usage"]["completion_tokens"] <= 8


def test_duplicate_live_req_id_is_rejected(server: ServerProcess) -> None:
    first = {"text": "long", "req_id": "dup-id", "max_dec_len": 250, "min_dec_len": 250, "stream": True}
    started = threading.Event()
    lines: list[dict] = []

    def stream() -> None:
        with requests.post(
            server.url + "/v1/chat/completions", json=first, stream=True, timeout=120
        ) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(json.loads(line))
                    started.set()

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(60)
    clash = requests.post(
        server.url + "/v1/chat/completions", json={"text": "x", "req_id": "dup-id"}, timeout=30
    )
    worker.join(120)
    assert clash.json()["error_code"] != 0 and "dup-id" in clash.json()["error_msg"]
    assert clash.status_code == 400
    assert lines[-1]["is_end"] == 1
    again = requests.post(
        server.url + "/v1/chat/completions",
        json={"text": "x", "req_id": "dup-id", "max_dec_len": 2},
        timeout=30,
    )
    assert again.json()["error_code"] == 0  # free again once the first finished


def test_errors_carry_error_code(server: ServerProcess) -> None:
    cases = [
        ({"req_id": "e1"}, "text"),
        ({"text": "x", "max_dec_len": 100000}, "max_dec_len"),
        ({"text": "x", "min_dec_len": 10, "max_dec_len": 5}, "min_dec_len"),
        ({"text": "并行" * 500}, "MAX_SEQ_LEN"),
        ({"text": "x", "topp": 0}, "topp"),
        ({"text": "x", "temperature": 0}, "temperature"),
    ]
    for body, word in cases:
        response = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        payload = response.json()
        assert payload["error_code"] == 400 and word in payload["error_msg"], (body, payload)


def test_request_timeout_aborts(server: ServerProcess) -> None:
    body = {"text": "slow", "max_dec_len": 250, "min_dec_len": 250, "timeout": 0.05}
    response = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 408
    assert response.json()["error_code"] == 408 and "timed out" in response.json()["error_msg"]


def test_fields_appear_only_where_fastdeploy_sends_them(server: ServerProcess) -> None:
    body = {"text": "hi", "max_dec_len": 3, "min_dec_len": 3}
    answer = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert set(answer) == {"req_id", "tokens_all", "is_end", "error_code", "error_msg"}
    stream = {**body, "stream": True}
    with requests.post(server.url + "/v1/chat/completions", json=stream, stream=True, timeout=60) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    line_fields = {"req_id", "token", "is_end", "send_idx", "error_code", "error_msg"}
    assert all(set(line) == line_fields for line in lines[:-1])
    assert set(lines[-1]) == line_fields | {"tokens_all"}
