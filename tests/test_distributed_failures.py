"""Failures across processes: a killed tensor-parallel worker or data-parallel replica takes the server
to 503 and a non-zero exit within seconds, and leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.helpers.server_process import ServerProcess


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
