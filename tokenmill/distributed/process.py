"""Helpers of the processes this package spawns (tensor-parallel workers, data-parallel replicas)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable

PARENT_POLL_SECONDS = 0.5
EXIT_PARENT_GONE = 3


def exit_with_parent(parent_pid: int) -> None:
    """Exit as soon as the parent process is gone, whatever the main thread is blocked in (an NCCL
    collective waiting for a dead rank never returns)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def exit_now(code: int) -> None:
    """Exit without interpreter teardown (which may wait on a process group or stuck threads)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def configure_logging(tag: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {tag} %(name)s: %(message)s")


def run_ranks(
    target: Callable[..., None], world_size: int, *args: object, timeout: float | None = None
) -> list[int]:
    """Run `target(rank, *args)` in one spawned process per rank (benchmarks and probes); the exit codes,
    once every rank ended (one still running after `timeout` seconds is killed)."""
    context = mp.get_context("spawn")
    ranks = [context.Process(target=target, args=(rank, *args)) for rank in range(world_size)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode or 0 for process in ranks]
