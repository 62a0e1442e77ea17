"""Rank 0's side of tensor parallelism: it starts one worker process per other rank, sends each
step to them, and watches them.

Workers are spawned (never forked: the engine process may already hold a CUDA context and threads)
and rendezvous with rank 0 over TCP on the loopback. A monitor thread waits on their process
sentinels: a worker that dies makes every later step raise `WorkerDiedError`, and calls `on_death`
(the server's engine client uses it to fail at once, since rank 0 may be blocked in a collective
that waits for the dead rank). Before the engine has started there is nobody to tell, so the
process exits instead of waiting in the start-up collectives. A step that never ends (ranks waiting
in different collectives) is caught by a `StepWatchdog`, which prints every rank's stacks, stops the
engine the same way, and ends the process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from multiprocessing.connection import wait

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.control import ControlSender, LoRAFill
from tokenmill.distributed.group import (
    SINGLE_RANK,
    TensorParallel,
    destroy_tensor_parallel,
    init_tensor_parallel,
)
from tokenmill.distributed.step_message import StepHeader
from tokenmill.distributed.timeline import StepTimeline, timeline_from_env
from tokenmill.distributed.trace import tracing
from tokenmill.distributed.watchdog import StepWatchdog, bounded, print_stacks_on_signal
from tokenmill.distributed.worker import rank_device, run_worker
from tokenmill.engine.step_inputs import StepInputs
from tokenmill.eval.local_server import free_port

logger = logging.getLogger(__name__)

EXIT_WORKER_DIED = 1
EXIT_STEP_HUNG = 4
SHUTDOWN_SECONDS = 10.0
HANG_EXIT_SECONDS = 5.0  # after a hung step: for the server to answer 503 and fail its requests
LEAVE_GROUP_SECONDS = 30.0


class WorkerDiedError(RuntimeError):
    """A tensor-parallel worker process exited: the model is incomplete, no step can run."""


class StepHungError(WorkerDiedError):
    """A tensor-parallel step did not finish in `step_timeout_s`: the ranks are out of step."""


class TensorParallelWorkers:
    def __init__(self, config: EngineConfig, device: torch.device) -> None:
        """Spawn the workers and join their group as rank 0 (returns once every rank has joined)."""
        context = mp.get_context("spawn")
        port = free_port()
        controls = []
        self.processes = []
        for rank in range(1, config.tensor_parallel_size):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=run_worker,
                args=(config, rank, port, receive, os.getpid()),
                name=f"tokenmill-tp{rank}",
                daemon=True,
            )
            process.start()
            receive.close()
            self.processes.append(process)
            controls.append(send)
        self._control = ControlSender(controls)
        self.failure: WorkerDiedError | None = None
        self.on_death: Callable[[WorkerDiedError], None] = _exit_process
        self._stopping = threading.Event()
        self._wake, self._waker = context.Pipe(duplex=False)
        self._monitor = threading.Thread(target=self._watch, name="tp-monitor", daemon=True)
        self._monitor.start()
        self._steps_sent = 0
        self._trace = tracing()
        self.timeline: StepTimeline | None = None  # a log of each step's events, when asked for
        print_stacks_on_signal()
        self._watchdog = StepWatchdog(
            config.step_timeout_s, lambda: [p.pid for p in self.processes if p.pid], self._hung
        )
        try:
            timeout = timedelta(seconds=config.collective_timeout_s)
            self.tp = init_tensor_parallel(
                0, config.tensor_parallel_size, port, device, timeout, config.symmetric_all_reduce
            )
        except BaseException:
            self.shutdown()
            raise
        self.timeline = timeline_from_env(0, device)

    def started(self, on_death: Callable[[WorkerDiedError], None] | None = None) -> None:
        """The engine is up: from now on a death raises in the next step and calls `on_death`."""
        self.on_death = on_death or (lambda _: None)

    def step_guard(self) -> AbstractContextManager[None]:
        """Wrap one engine step: if it does not end in `step_timeout_s`, the watchdog steps in."""
        return self._watchdog

    @property
    def steps_sent(self) -> int:
        """Steps sent so far (the last one's number)."""
        return self._steps_sent

    def send_step(self, inputs: StepInputs, use_graph: bool) -> None:
        """Called as soon as the step's inputs exist: before rank 0 queues the step itself, and (for a
        step launched ahead) before it waits for the previous step's tokens."""
        self._steps_sent += 1
        if self.timeline is not None:
            self.timeline.host("sending", self._steps_sent)
        header = StepHeader(self._steps_sent, use_graph, self.tp.log.mark())
        if self._trace:
            logger.info("rank 0 step #%d sent: graph=%s, collectives %s", *header)
        with self._sending():
            self._control.send_step(inputs, header)
        if self.timeline is not None:
            self.timeline.host("sent", header.step)
            self.timeline.device("begin", header.step)

    def fill_lora_slot(self, fill: LoRAFill) -> None:
        """Every worker puts the adapter into the slot too (before any step that uses it)."""
        with self._sending():
            self._control.send_lora_fill(fill)

    @contextlib.contextmanager
    def _sending(self) -> Iterator[None]:
        self._check()
        try:
            yield
        except OSError as exc:
            raise WorkerDiedError(f"a tensor-parallel worker is gone: {exc}") from exc

    def share_sampled(self, sampled: torch.Tensor) -> None:
        self._check()
        if self.timeline is not None:  # the step's forward pass and sampling are queued
            self.timeline.host("launched", self._steps_sent)
            self.timeline.device("sampled", self._steps_sent)
        self.tp.broadcast_from_first(sampled if sampled.dtype == torch.long else sampled.long())

    def shutdown(self) -> None:
        """Tell the workers to stop, wait a little, then kill any that did not."""
        self._stopping.set()
        self._watchdog.stop()
        self._waker.send_bytes(b"")
        self._control.send_shutdown()
        if self.timeline is not None and self.failure is None:
            self.timeline.save()
        for process in self.processes:
            process.join(SHUTDOWN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        # NCCL's communicator destruction can wait for ever (e.g. on a live CUDA graph that captured
        # its collectives): say so with the stacks rather than hang the caller.
        bounded(destroy_tensor_parallel, LEAVE_GROUP_SECONDS, "leaving the tensor-parallel group")

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _watch(self) -> None:
        sentinels = {process.sentinel: process for process in self.processes}
        ready = wait([*sentinels, self._wake])
        if self._stopping.is_set():
            return
        dead = next(sentinels[s] for s in ready if s in sentinels)
        dead.join()
        self.failure = WorkerDiedError(f"tensor-parallel worker {dead.name} exited with code {dead.exitcode}")
        logger.critical("%s", self.failure)
        self.on_death(self.failure)

    def _hung(self, message: str) -> None:
        """The watchdog's verdict (the stacks are printed): kill the workers, which cannot be brought
        back from inside the driver, fail the engine, give the server a moment to answer 503 and
        exit on its own, else end the process."""
        self._stopping.set()  # the deaths below are not news for the monitor
        for process in self.processes:
            process.kill()
        self.failure = StepHungError(message)
        self.on_death(self.failure)
        time.sleep(HANG_EXIT_SECONDS)
        logging.shutdown()
        os._exit(EXIT_STEP_HUNG)


def start_tensor_parallel(
    config: EngineConfig,
) -> tuple[torch.device, TensorParallel, TensorParallelWorkers | None]:
    """Rank 0's device and group, and the workers it drives (None without tensor parallelism)."""
    device = rank_device(config, 0)
    if config.tensor_parallel_size == 1:
        return device, SINGLE_RANK, None
    workers = TensorParallelWorkers(config, device)
    return device, workers.tp, workers


def _exit_process(failure: WorkerDiedError) -> None:
    """While the engine starts, rank 0 may be waiting in a collective for the dead worker: exit."""
    logger.critical("exiting: %s while the engine was starting", failure)
    logging.shutdown()
    os._exit(EXIT_WORKER_DIED)
