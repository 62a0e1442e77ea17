"""Data parallelism: the router's choices, and a real server with two engine replicas."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import requests

from tests.helpers.server_process import ServerProcess
from tokenmill.distributed.data_parallel import AFFINITY_SLACK, AFFINITY_TOKENS, DataParallelLLM, _Replica


def _router(*outstanding: int) -> DataParallelLLM:
    router = DataParallelLLM.__new__(DataParallelLLM)
    router._replicas = [SimpleNamespace(index=i, outstanding=n) for i, n in enumerate(outstanding)]
    router._affinity = OrderedDict()
    return router


def test_requests_go_to_the_replica_with_the_fewest_unfinished_sequences() -> None:
    router = _router(3, 1, 2)
    assert router._route([1, 2, 3]).index == 1
    router._replicas[1].outstanding = 5
    assert router._route([1, 2, 3]).index == 2


def test_a_shared_prefix_sticks_to_its_replica_until_it_is_too_busy() -> None:
    router = _router(0, 0)
    prefix = list(range(AFFINITY_TOKENS))
    first = router._route([*prefix, 1])
    first.outstanding += 1
    assert router._route([*prefix, 2]) is first  # busier by one, but its cache holds the prefix
    first.outstanding += AFFINITY_SLACK
    other = router._route([*prefix, 3])
    assert other is not first
    assert router._route([*prefix, 4]) is other  # the prefix moved with it
    assert router._route([*range(100, 100 + AFFINITY_TOKENS), 1]) is other  # unrelated: least busy


class _Pipe:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, message: tuple) -> None:
        self.sent.append(message)


def test_the_requests_of_one_event_loop_turn_reach_a_replica_as_one_message() -> None:
    """A batch's items leave together, and an abort never overtakes the add of its request."""
    replica = _Replica.__new__(_Replica)
    replica.pipe, replica.send_lock, replica._adds = _Pipe(), threading.Lock(), []

    async def turns() -> None:
        for i in range(3):
            replica.add((f"r{i}", [1, 2], None, True, None))
        await asyncio.sleep(0)  # the end of the turn sends them
        replica.add(("r3", [3], None, True, None))
        replica.send(("abort", "r3"))

    asyncio.run(turns())
    (kind, first), second, abort = replica.pipe.sent
    assert kind == "add" and [request[0] for request in first] == ["r0", "r1", "r2"]
    assert second[0] == "add" and [request[0] for request in second[1]] == ["r3"]
    assert abort == ("abort", "r3")


def _gauges(server: ServerProcess, name: str) -> dict[str, float]:
    values = {}
    for line in requests.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            values[labels.split('replica="')[1].split('"')[0]] = float(value)
    return values


@pytest.mark.slow
def test_two_replicas_answer_a_predict_batch_in_order(tiny_model_dir, server: ServerProcess) -> None:
    questions = [f"Question number {i}: what is {i} plus {i}?" for i in range(24)]
    body = {"prompt": questions, "max_new_tokens": 40}
    expected = requests.post(server.url + "/predict", json=body, timeout=300).json()["response"]
    parallel = ServerProcess("--model", str(tiny_model_dir("qwen3")), "--data-parallel-size", "2")
    try:
        parallel.wait_ready()
        busy: set[str] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                gauges = _gauges(parallel, "tokenmill:num_requests_running")
                busy.update(replica for replica, running in gauges.items() if running > 0)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            response = requests.post(parallel.url + "/predict", json=body, timeout=300)
        finally:
            done.set()
            watcher.join()
        assert response.status_code == 200, response.text
        assert response.json()["response"] == expected
        assert busy == {"0", "1"}, parallel.log()
        _structured_and_unknown_models_are_answered(parallel)
    finally:
        assert parallel.stop() == 0


def _structured_and_unknown_models_are_answered(parallel: ServerProcess) -> None:
    """The server reads its engine through the client protocol: behind replicas, a constraint is still
    compiled (and so checked) before routing, and an unknown model is a 404, not a crash."""
    model = requests.get(parallel.url + "/v1/models", timeout=5).json()["data"][0]["id"]
    chat = {"model": model, "messages": [{"role": "user", "content": "Pick one."}], "max_tokens": 8}
    choice = requests.post(
        parallel.url + "/v1/chat/completions", json={**chat, "guided_choice": ["alpha", "beta"]}, timeout=120
    )
    assert choice.status_code == 200, choice.text
    assert choice.json()["choices"][0]["message"]["content"] in {"alpha", "beta"}
    bad_schema = {**chat, "guided_json": {"type": "fish"}}
    refused = requests.post(parallel.url + "/v1/chat/completions", json=bad_schema, timeout=60)
    assert refused.status_code == 400 and "guided_json" in refused.text, refused.text
    unknown = requests.post(parallel.url + "/v1/chat/completions", json={**chat, "model": "nope"}, timeout=60)
    assert unknown.status_code == 404 and "'nope'" in unknown.text, unknown.text


@pytest.mark.slow
def test_replicas_that_are_themselves_tensor_parallel(tiny_model_dir, server: ServerProcess) -> None:
    """DP=2 x TP=2: two replica processes, each the rank 0 of its own two-process group."""
    body = {"prompt": [f"Say {i} twice." for i in range(6)], "max_new_tokens": 12}
    expected = requests.post(server.url + "/predict", json=body, timeout=300).json()["response"]
    flags = ("--data-parallel-size", "2", "--tensor-parallel-size", "2", "--warmup-prompts", "2")
    parallel = ServerProcess("--model", str(tiny_model_dir("qwen3")), *flags)
    try:
        parallel.wait_ready(timeout=300)
        response = requests.post(parallel.url + "/predict", json=body, timeout=300)
        assert response.status_code == 200, response.text
        assert response.json()["response"] == expected
    finally:
        assert parallel.stop() == 0, parallel.log()
