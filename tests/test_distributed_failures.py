"""Failures across processes: a killed tensor-parallel worker or data-parallel replica takes the server
to 503 and a non-zero exit within seconds, and leaves no process behind; so does a worker that stops
making progress; and ranks whose collectives differ are named instead of hanging."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.helpers.server_process import ServerProcess
from tokenmill import LLM, SamplingParams
from tokenmill.distributed.trace import CollectiveLog
from tokenmill.distributed.watchdog import bounded


def _descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children + [d for child in children for d in _descendants(child)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "spawned"), [("--tensor-parallel-size", 1), ("--data-parallel-size", 2)], ids=["tp", "dp"]
)
def test_a_dead_process_takes_the_server_to_503_and_exit_without_orphans(
    flag: str, spawned: int, tiny_model_dir
) -> None:
    """Kill a tensor-parallel worker (or a data-parallel replica): the server must not hang serving a
    broken engine, nor leave the other processes behind."""
    server = ServerProcess("--model", str(tiny_model_dir("qwen3")), flag, "2")
    server.wait_ready()
    family = _descendants(server.process.pid)
    workers = [pid for pid in family if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == spawned, family
    os.kill(workers[-1], signal.SIGKILL)
    killed, statuses = time.monotonic(), []
    while server.process.poll() is None and time.monotonic() - killed < 20:
        with contextlib.suppress(requests.ConnectionError):  # exited meanwhile
            statuses.append(requests.get(server.url + "/health", timeout=1).status_code)
        time.sleep(0.05)
    code = server.stop()
    assert 503 in statuses, server.log()
    assert code != 0 and time.monotonic() - killed < 20, server.log()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in family if _alive(pid)], "orphan processes"


@pytest.mark.slow
def test_a_hung_tensor_parallel_step_prints_every_rank_stack_then_503_and_exit(tiny_model_dir) -> None:
    """A worker that stops making progress (SIGSTOP: it neither dies nor answers) leaves rank 0 waiting
    in a collective. The step watchdog must print rank 0's stacks, answer 503, exit with its own code
    and kill the stopped worker, instead of hanging for the collective timeout."""
    server = ServerProcess(
        "--model",
        str(tiny_model_dir("qwen3")),
        "--served-model-name",
        "m",
        "--tensor-parallel-size",
        "2",
        "--step-timeout-s",
        "3",
    )
    server.wait_ready()
    family = _descendants(server.process.pid)
    (worker,) = [pid for pid in family if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(worker, signal.SIGSTOP)
    body = {"model": "m", "prompt": "hello", "max_tokens": 4}
    with contextlib.suppress(requests.RequestException):  # the request dies with the server
        requests.post(server.url + "/v1/completions", json=body, timeout=1)
    statuses = []
    stopped = time.monotonic()
    while server.process.poll() is None and time.monotonic() - stopped < 30:
        with contextlib.suppress(requests.RequestException):
            statuses.append(requests.get(server.url + "/health", timeout=1).status_code)
        time.sleep(0.1)
    code = server.stop()
    log = server.log_path.read_text()
    assert code != 0, log  # the server exits on the engine failure (else the watchdog would, with its code)
    assert 503 in statuses, log
    assert "has not finished in" in log and "most recent call first" in log, log
    assert "_step" in log, log  # rank 0's stack: the engine thread inside its step
    assert not _alive(worker), "the stopped worker was left behind"


@pytest.mark.slow
def test_a_worker_whose_collectives_differ_from_rank_0_stops_naming_both_counts(
    tiny_model_dir, monkeypatch, capfd
) -> None:
    """Rank 0 claims one collective more than it issued (as if a branch only it takes issued one): the
    worker must refuse the next step with both ranks' counts, and rank 0's step must fail, not hang."""
    real_mark = CollectiveLog.mark
    monkeypatch.setattr(CollectiveLog, "mark", lambda self: (real_mark(self)[0] + 1, real_mark(self)[1]))
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", tensor_parallel_size=2, step_timeout_s=60)
    try:
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - gloo's error for the peer that left
            llm.generate("hello", SamplingParams(max_tokens=2), use_tqdm=False)
        assert time.monotonic() - started < 30
    finally:
        llm.shutdown()
    err = capfd.readouterr().err
    assert "RanksDivergedError: before step 1, rank 1 had issued" in err, err[-3000:]


def test_a_call_that_never_returns_is_left_behind_with_the_stacks(capfd) -> None:
    """Leaving an NCCL group can wait for ever (a live graph holding its collectives): shutdown must go
    on and say where it was stuck."""
    started = time.monotonic()
    assert not bounded(lambda: time.sleep(30), 0.2, "leaving the tensor-parallel group")
    assert time.monotonic() - started < 5
    err = capfd.readouterr().err
    assert "most recent call first" in err and "in <lambda>" in err, err
    assert bounded(lambda: None, 5, "a quick call")
