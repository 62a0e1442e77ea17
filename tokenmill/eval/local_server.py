"""`tokenmill serve` as a child process on loopback, configured through its environment: the tools that
exercise a real server (judge-sim, tune) start and stop it the same way, and learn at once when it dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

LOG_TAIL_LINES = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM (a server drains), then kill if it has not exited within `timeout`; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ServerDied(RuntimeError):
    """The server process exited while we were waiting for it."""


class LocalServer:
    """The server's output always goes to a file (`log`, else a temporary one), so that when it dies its
    last lines can be shown."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        log: Path | None = None,
        append: bool = True,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "TOKENMILL_HOST": "127.0.0.1", "TOKENMILL_PORT": str(self.port)}
        self._temporary = log is None
        if log is None:
            handle, name = tempfile.mkstemp(prefix="tokenmill-server-", suffix=".log")
            os.close(handle)
            log = Path(name)
        self.log_path = log
        self._log = open(self.log_path, "a" if append else "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokenmill", "serve"],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        """Raise `ServerDied`, with the end of the server's log, if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ServerDied(f"the server exited with status {code}; its last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the server drains), then kill if it has not exited within `timeout`."""
        stop_process(self.process, timeout)
        self._log.close()
        if self._temporary:
            self.log_path.unlink(missing_ok=True)
