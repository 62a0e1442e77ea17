"""One request cannot take the server down, over real HTTP against a real server process.

An out-of-vocabulary stop token id used to fail the sampler inside the engine thread, answer 503 and
take the whole process down. Token ids are now checked at admission (a 400 naming the field), and a
step that fails anyway fails only its own requests (a 500), while the server serves on.
"""

from __future__ import annotations

import pytest
import requests

from tests.helpers.server_process import ServerProcess

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def random_server():
    process = ServerProcess("--model", "random:qwen3-tiny", "--max-dec-len", "64").wait_ready()
    yield process
    process.stop()


def still_serves(server: ServerProcess) -> None:
    """A valid request right after: the last id of the 512-token vocabulary is a fine stop token."""
    body = {"messages": HI, "max_tokens": 4, "min_tokens": 1, "stop_token_ids": [511]}
    response = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1
    assert server.process.poll() is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": HI, "max_tokens": 4, "min_tokens": 1, "stop_token_ids": [512]}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "min_tokens": 1, "stop_token_ids": [10**9]}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "stop_token_ids": [3, 600]}),
    ],
    ids=["chat", "completions-huge-id", "completions-no-min-tokens"],
)
def test_out_of_vocabulary_stop_token_id_is_a_400_and_the_server_serves_on(
    random_server: ServerProcess, path: str, body: dict
) -> None:
    response = requests.post(random_server.url + path, json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "stop_token_ids"
    assert "[0, 512)" in error["message"]
    still_serves(random_server)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_a_refused_stream_is_a_400_naming_the_field(random_server: ServerProcess, route: str) -> None:
    """Admission is checked before a stream's headers go out, so a refusal is a status, not an error
    event after a 200."""
    prompt = {"messages": HI} if route.endswith("chat/completions") else {"prompt": "hi"}
    body = {**prompt, "stream": True, "min_tokens": 1, "stop_token_ids": [512]}
    response = requests.post(random_server.url + route, json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "stop_token_ids"
    still_serves(random_server)


@pytest.mark.slow
def test_out_of_vocabulary_prompt_token_id_is_a_400(random_server: ServerProcess) -> None:
    body = {"prompt": [1, 2, 512], "max_tokens": 4}
    response = requests.post(random_server.url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in ("prompt", "tokens")
    still_serves(random_server)


POISON = [99, 98, 97]
STEP_FAULT = (
    "import sys, tokenmill.engine.model_runner as m\n"
    "original = m.ModelRunner.launch\n"
    "def launch(self, batch, token_source=None):\n"
    f"    if any(seq.prompt_token_ids[:3] == {POISON} for seq in batch.seqs):\n"
    "        raise IndexError('injected step fault')\n"
    "    return original(self, batch, token_source)\n"
    "m.ModelRunner.launch = launch\n"
    "from tokenmill.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.slow
def test_a_step_that_fails_fails_its_request_and_the_server_serves_on() -> None:
    process = ServerProcess("--model", "random:qwen3-tiny", wrapper=STEP_FAULT).wait_ready()
    try:
        for _ in range(4):  # however often it happens
            body = {"prompt": [*POISON, 5], "max_tokens": 4}
            response = requests.post(process.url + "/v1/completions", json=body, timeout=60)
            assert response.status_code == 500, response.text
            assert "injected step fault" in response.json()["error"]["message"]
        assert requests.get(process.url + "/v2/health/live", timeout=5).status_code == 200
        still_serves(process)
    finally:
        process.stop()
