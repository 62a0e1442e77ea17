"""A real `tokenmill serve` process on a free loopback port, for tests that speak HTTP to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tokenmill.eval.local_server import free_port, stop_process


class ServerProcess:
    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        wrapper: str | None = None,
        command: list[str] | None = None,
    ) -> None:
        """`args` go to `tokenmill serve`; `wrapper` is Python run in its place with the same arguments
        (e.g. to inject a fault first); `command` replaces the whole command line and must listen on
        `self.port`."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        launcher = ["-c", wrapper] if wrapper is not None else ["-m", "tokenmill"]
        serve = [sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if command is not None:
            command = [part.replace("{port}", str(self.port)) for part in command]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tokenmill-server-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command or [*serve, "--device", "cpu", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def wait_ready(self, timeout: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-5000:]

    def stop(self, timeout: float = 30.0) -> int:
        code = stop_process(self.process, timeout)
        self._log.close()
        return code

    def metric(self, name: str) -> float:
        for line in requests.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
