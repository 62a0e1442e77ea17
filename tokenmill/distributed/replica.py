"""A data-parallel replica process: one whole engine (itself possibly tensor-parallel) on its own GPUs,
fed requests by the server's `DataParallelLLM` over a pipe.

Inside, an ordinary `AsyncLLM` serves them, so a replica keeps the single-engine failure policy.
Messages in: ("add", [(request_id, prompt, params, final_only, lora), ...]) (the requests routed here
in one turn of the server's event loop), ("abort", request_id), ("stop",).
Messages out: ("ready", ReplicaFacts), then batches ("outputs", [(request_id, RequestOutput |
exception)], EngineLoad) at most one per turn of the event loop (so per engine step, not per request),
and ("dead", message) if the engine stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.group import SINGLE_RANK
from tokenmill.distributed.process import configure_logging, exit_now, exit_with_parent
from tokenmill.engine.async_llm import AsyncLLM
from tokenmill.engine.input_processor import Prompt
from tokenmill.models.config import ModelConfig
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output.manager import StructuredOutputs
from tokenmill.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaLoRA:
    """The LoRA adapters a replica serves (those of `lora_modules`: every replica loads them all)."""

    adapters: tuple[str, ...]


@dataclass(frozen=True)
class ReplicaFacts:
    """What the server reads of an engine (the same names as `LLMEngine`'s), sent once by each replica.
    `lora`: the adapters every replica loaded; `structured` is the server process's own grammar
    compiler, which checks a request's constraint before it is routed."""

    model_name: str
    device: torch.device
    model_config: ModelConfig
    max_model_len: int
    tokenizer: Tokenizer
    eos_token_ids: tuple[int, ...]
    lora: ReplicaLoRA | None = None
    structured: StructuredOutputs | None = None


def run_replica(
    config: EngineConfig, index: int, gpus: str | None, pipe: Connection, parent_pid: int
) -> None:
    """Process entry point. `gpus`: this replica's CUDA_VISIBLE_DEVICES (set before CUDA starts)."""
    configure_logging(f"dp{index}")
    exit_with_parent(parent_pid)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    try:
        asyncio.run(_serve(config, pipe))
    except Exception as exc:
        logger.exception("replica %d failed", index)
        pipe.send(("dead", f"{type(exc).__name__}: {exc}"))
        exit_now(1)
    exit_now(0)


class _Outbox:
    """Outputs of one event-loop turn, sent to the server as one message."""

    def __init__(self, pipe: Connection, llm: AsyncLLM) -> None:
        self.pipe, self.llm = pipe, llm
        self.items: list[tuple[str, RequestOutput | BaseException]] = []

    def put(self, request_id: str, item: RequestOutput | BaseException) -> None:
        if not self.items:
            asyncio.get_running_loop().call_soon(self.flush)
        self.items.append((request_id, item))

    def flush(self) -> None:
        items, self.items = self.items, []
        self.pipe.send(("outputs", items, self.llm.loads()[0]))


async def _serve(config: EngineConfig, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    failed = asyncio.Event()
    llm = AsyncLLM(config, on_failure=lambda _: loop.call_soon_threadsafe(failed.set))
    engine = llm.engine
    model_config = replace(engine.model_config, tensor_parallel=SINGLE_RANK)
    lora = None if engine.lora is None else ReplicaLoRA(tuple(engine.lora.adapters))
    facts = ReplicaFacts(
        engine.model_name,
        engine.device,
        model_config,
        engine.max_model_len,
        llm.tokenizer,
        engine.eos_token_ids,
        lora=lora,
    )
    pipe.send(("ready", facts))
    inbox: asyncio.Queue[tuple] = asyncio.Queue()
    threading.Thread(target=_read, args=(pipe, loop, inbox), name="replica-inbox", daemon=True).start()
    outbox = _Outbox(pipe, llm)
    relays: set[asyncio.Task] = set()
    stop = asyncio.ensure_future(failed.wait())
    while True:
        command = asyncio.ensure_future(inbox.get())
        await asyncio.wait({command, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            raise RuntimeError(f"the engine stopped: {llm.error!r}")
        message = command.result()
        if message[0] == "add":
            for request in message[1]:
                relay = asyncio.create_task(_relay(llm, outbox, *request))
                relays.add(relay)
                relay.add_done_callback(relays.discard)
        elif message[0] == "abort":
            await llm.abort(message[1])
        else:
            llm.shutdown()
            return


async def _relay(
    llm: AsyncLLM,
    outbox: _Outbox,
    request_id: str,
    prompt: Prompt,
    params: SamplingParams,
    final_only: bool,
    lora: str | None,
) -> None:
    try:
        async for output in llm.generate(prompt, params, request_id, final_only, lora):
            outbox.put(request_id, output)
    except Exception as exc:  # ValueError (invalid), RequestFailedError, EngineDeadError: the caller's
        outbox.put(request_id, exc)


def _read(pipe: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
    while True:
        try:
            message = pipe.recv()
        except EOFError:  # the server is gone
            message = ("stop",)
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if message[0] == "stop":
            return
