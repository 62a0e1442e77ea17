"""Rank 0's guard against a tensor-parallel step that never ends, and every rank's stack on demand.

A rank waiting in a collective for a peer that went elsewhere waits inside the driver: no exception,
no log. So rank 0 times each step: one that takes longer than `step_timeout_s` prints the Python
stacks of every thread of every rank (rank 0's own, then each worker's on SIGUSR1, which every
tensor-parallel process handles with `faulthandler`), and calls `on_hang`, which stops the engine (the
server answers 503 and exits non-zero). `kill -USR1 <pid>` prints any rank's stacks by hand too.
`bounded` does the same for one call that may never return (leaving the process group at shutdown).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

STACKS_SIGNAL = signal.SIGUSR1
STACKS_SECONDS = 2.0  # for the workers to print theirs


def bounded(call: Callable[[], None], seconds: float, what: str) -> bool:
    """Run `call` on a daemon thread; if it has not returned in `seconds`, print every thread's stack
    and return False (the thread is left behind: the process is on its way out)."""
    thread = threading.Thread(target=call, name=what, daemon=True)
    thread.start()
    thread.join(seconds)
    if not thread.is_alive():
        return True
    logger.critical("%s has not finished in %.0f s; going on without it. Stacks follow", what, seconds)
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    return False


def print_stacks_on_signal() -> None:
    """Print every thread's stack to stderr when this process receives SIGUSR1."""
    faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True)


class StepWatchdog:
    def __init__(
        self, timeout: float, worker_pids: Callable[[], list[int]], on_hang: Callable[[str], None]
    ) -> None:
        self.timeout = timeout
        self._worker_pids = worker_pids
        self._on_hang = on_hang
        self._since: float | None = None  # when the step under way started
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="tp-step-watchdog", daemon=True).start()

    def __enter__(self) -> None:
        """Time one engine step (`with watchdog:`): two attribute writes, the watching is on a thread."""
        self._since = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self._since = None

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        poll = min(1.0, self.timeout / 4)
        while not self._stop.wait(poll):
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                self._report(time.monotonic() - since)
                return

    def _report(self, seconds: float) -> None:
        message = (
            f"a tensor-parallel step has not finished in {seconds:.0f} s (step_timeout_s={self.timeout:g}): "
            "the ranks are waiting in different collectives, or one is stuck"
        )
        logger.critical("%s; the Python stacks of rank 0, then of each worker, follow", message)
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for pid in self._worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, STACKS_SIGNAL)
        time.sleep(STACKS_SECONDS)
        self._on_hang(message)
