"""Data parallelism: N engine replicas (processes, each on its own GPUs) behind one server.

`DataParallelLLM` is the server's engine client when `data_parallel_size` > 1, with `AsyncLLM`'s
interface. Each request goes to one replica, chosen by load: the sequences it has been given that
have not finished (exact and current, unlike a step-old report, so the items of one /predict batch
spread evenly as they arrive). A request whose prompt starts like a recent one's (same first
`AFFINITY_TOKENS` tokens) goes where that one went, to reuse its prefix cache, unless that replica
is `AFFINITY_SLACK` sequences busier than the least busy. The requests routed to a replica in one
turn of the event loop travel as one message, so the items of a batch reach its engine together
(one message per request cost a pickle, a pipe write and a wake-up each, and spread the batch's
admission over several engine steps).

A replica that dies stops the whole client (`on_failure`), as one engine's death stops `AsyncLLM`:
the server answers 503 and exits, and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.replica import ReplicaFacts, run_replica
from tokenmill.engine.engine_client import (
    EngineDeadError,
    RequestStream,
    StreamingClient,
    Submission,
    deliver,
)
from tokenmill.engine.input_processor import InputProcessor, Prompt
from tokenmill.engine.stats import EngineLoad
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output.compiler import GrammarCompiler
from tokenmill.structured_output.manager import StructuredOutputs

logger = logging.getLogger(__name__)

AFFINITY_TOKENS = 64
AFFINITY_SLACK = 4
AFFINITY_ENTRIES = 4096
SHUTDOWN_SECONDS = 10.0


class _Replica:
    """The server's end of one replica process."""

    def __init__(self, context: mp.context.SpawnContext, config: EngineConfig, index: int) -> None:
        self.index = index
        self.pipe, child = context.Pipe()
        gpus = _replica_gpus(config, index)
        replica_config = config.model_copy(update={"data_parallel_size": 1})
        self.process = context.Process(
            target=run_replica,
            args=(replica_config, index, gpus, child, os.getpid()),
            name=f"tokenmill-dp{index}",
            daemon=False,  # a daemon process may not start the replica's own tensor-parallel workers
        )
        self.process.start()
        child.close()
        self.outstanding = 0  # sequences sent and not finished
        self.load = EngineLoad(0, 0, 0.0)  # as last reported
        self.send_lock = threading.Lock()
        self._adds: list[tuple] = []  # requests routed here in this event-loop turn, not sent yet

    def add(self, request: tuple) -> None:
        """Queue a request (request_id, prompt, params, final_only, lora) for the end of this turn."""
        with self.send_lock:
            if not self._adds:
                asyncio.get_running_loop().call_soon(self._send_adds)
            self._adds.append(request)

    def send(self, message: tuple) -> None:
        """Send a message, after the requests queued so far (so an abort never overtakes its add)."""
        with self.send_lock:
            self._flush(message)

    def _send_adds(self) -> None:
        with self.send_lock, contextlib.suppress(OSError):  # a dead replica is reported by _listen
            self._flush(None)

    def _flush(self, message: tuple | None) -> None:
        if self._adds:
            adds, self._adds = self._adds, []
            self.pipe.send(("add", adds))
        if message is not None:
            self.pipe.send(message)

    def exit_status(self) -> str:
        """How the process ended (its pipe just closed, so it is exiting)."""
        self.process.join(5)
        return f"exited with code {self.process.exitcode}"

    def wait_ready(self) -> ReplicaFacts:
        try:
            kind, content = self.pipe.recv()
        except EOFError:
            kind, content = "dead", self.exit_status()
        if kind != "ready":
            raise RuntimeError(f"data-parallel replica {self.index} failed to start: {content}")
        return content


class DataParallelLLM(StreamingClient):
    def __init__(
        self, config: EngineConfig, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        context = mp.get_context("spawn")
        self._replicas = [_Replica(context, config, i) for i in range(config.data_parallel_size)]
        try:
            facts = [replica.wait_ready() for replica in self._replicas]
        except RuntimeError:
            self.shutdown()
            raise
        first = facts[0]
        vocab_size, max_model_len = first.model_config.vocab_size, first.max_model_len
        compiler = GrammarCompiler(first.tokenizer, vocab_size, first.eos_token_ids)
        self.engine = replace(first, structured=StructuredOutputs(compiler))  # what the server reads
        self.tokenizer = first.tokenizer
        self._admission = InputProcessor(self.tokenizer, vocab_size, max_model_len, first.eos_token_ids)
        self._on_failure = on_failure
        self.error: BaseException | None = None
        self._streams: dict[str, RequestStream] = {}
        self._placement: dict[str, _Replica] = {}  # the replica of each open stream
        self._affinity: OrderedDict[int, _Replica] = OrderedDict()
        self._stopping = False
        for replica in self._replicas:
            listener = threading.Thread(target=self._listen, args=(replica,), name=f"dp{replica.index}")
            listener.daemon = True
            listener.start()
        logger.info("%d data-parallel replicas of %s ready", len(self._replicas), self.engine.model_name)

    @property
    def is_alive(self) -> bool:
        return self.error is None

    def check(self, prompt: Prompt, params: SamplingParams) -> None:
        """Admission's checks, on the caller's thread (as `AsyncLLM.check`)."""
        self._admission.process("", prompt, params)

    def loads(self) -> list[EngineLoad]:
        return [replica.load for replica in self._replicas]

    def _submit(self, request: Submission) -> None:
        replica = self._route(request.prompt)
        self._placement[request.request_id] = replica
        replica.outstanding += request.params.n
        replica.add((request.request_id, request.prompt, request.params, request.final_only, request.lora))

    def _closed(self, request: Submission, finished: bool) -> None:
        replica = self._placement.pop(request.request_id)
        replica.outstanding -= request.params.n
        if not finished:
            replica.send(("abort", request.request_id))

    async def abort(self, request_id: str) -> None:
        replica = self._placement.get(request_id)
        if replica is not None:
            replica.send(("abort", request_id))

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        self._stopping = True
        for replica in self._replicas:
            with contextlib.suppress(OSError):  # that replica is gone already
                replica.send(("stop",))
        for replica in self._replicas:
            replica.process.join(timeout)
            if replica.process.is_alive():
                replica.process.kill()
                replica.process.join()

    def _route(self, prompt: Prompt) -> _Replica:
        least = min(self._replicas, key=lambda r: r.outstanding)
        key = _prefix_key(prompt)
        if key is None:
            return least
        chosen = self._affinity.get(key)
        if chosen is None or chosen.outstanding > least.outstanding + AFFINITY_SLACK:
            chosen = least
        self._affinity[key] = chosen
        self._affinity.move_to_end(key)
        if len(self._affinity) > AFFINITY_ENTRIES:
            self._affinity.popitem(last=False)
        return chosen

    def _listen(self, replica: _Replica) -> None:
        """The replica's messages, on a thread: outputs go to their streams' event loops."""
        while True:
            try:
                message = replica.pipe.recv()
            except (EOFError, OSError):
                message = ("dead", replica.exit_status())
            if message[0] == "outputs":
                replica.load = message[2]
                self._deliver(message[1])
            elif not self._stopping:
                self._die(RuntimeError(f"data-parallel replica {replica.index} stopped: {message[1]}"))
                return
            else:
                return

    def _deliver(self, items: list[tuple[str, RequestOutput | BaseException]]) -> None:
        streams = self._streams  # read once per item: the event loop may remove a stream meanwhile
        deliver([(stream, item) for request_id, item in items if (stream := streams.get(request_id))])

    def _die(self, exc: BaseException) -> None:
        if self.error is not None:
            return
        logger.critical("%s", exc)
        self.error = exc
        dead = EngineDeadError(f"the engine has stopped: {exc!r}")
        self._deliver([(request_id, dead) for request_id in list(self._streams)])
        if self._on_failure is not None:
            self._on_failure(exc)


def _prefix_key(prompt: Prompt) -> int | None:
    """The affinity key of a token prompt: its first AFFINITY_TOKENS tokens (None if shorter)."""
    if isinstance(prompt, str) or len(prompt) <= AFFINITY_TOKENS:
        return None
    return hash(tuple(prompt[:AFFINITY_TOKENS]))


def _replica_gpus(config: EngineConfig, index: int) -> str | None:
    """Replica `index`'s CUDA_VISIBLE_DEVICES: the next `tensor_parallel_size` of the visible GPUs."""
    if config.resolved_device().type != "cuda":
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    size = config.tensor_parallel_size
    needed = config.data_parallel_size * size
    if len(ids) < needed:
        raise ValueError(
            f"data_parallel_size x tensor_parallel_size = {needed} GPUs, but {len(ids)} are visible"
        )
    return ",".join(ids[index * size : (index + 1) * size])
