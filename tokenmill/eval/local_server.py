"""`tokenmill serve` as a child process on loopback, configured through its environment: the tools that
exercise a real server (judge-sim, tune) start and stop it the same way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    def __init__(
        self, env: dict[str, str], port: int | None = None, log: Path | None = None, append: bool = True
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "TOKENMILL_HOST": "127.0.0.1", "TOKENMILL_PORT": str(self.port)}
        self._log = open(log, "a" if append else "w") if log else None  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokenmill", "serve"],
            env={**os.environ, **self.env},
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the server drains), then kill if it has not exited within `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
