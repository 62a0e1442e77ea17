"""A tensor-parallel worker process: one rank's part of the model, driven step by step by rank 0.

It builds its part exactly as rank 0 does (`engine/rank_model.py`), then loops: receive a step's
inputs, run the forward pass (its collectives meet rank 0's), and when the step samples, receive the
sampled tokens rank 0 broadcasts (the input of a continuation step). It has no scheduler and no
sampler. It exits when rank 0 says so, when its control pipe closes, or when its parent is gone (a
thread watches, since a rank blocked in an NCCL collective would otherwise wait for ever). Before each
step it checks that it issued the same collectives as rank 0 (`trace.py`), and it prints its stacks
on SIGUSR1 (rank 0's step watchdog sends it).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.control import ControlReceiver, LoRAFill
from tokenmill.distributed.group import TensorParallel, init_tensor_parallel
from tokenmill.distributed.process import configure_logging, exit_now, exit_with_parent
from tokenmill.distributed.timeline import timeline_from_env
from tokenmill.distributed.watchdog import print_stacks_on_signal
from tokenmill.lora.adapter import read_adapter

if TYPE_CHECKING:
    from tokenmill.engine.model_runner import ModelRunner
    from tokenmill.lora.layers import LoRAModel

logger = logging.getLogger(__name__)


def rank_device(config: EngineConfig, rank: int) -> torch.device:
    """The device of `rank`: the rank-th visible GPU (CUDA_VISIBLE_DEVICES order), or the CPU."""
    device = config.resolved_device()
    if device.type != "cuda" or config.tensor_parallel_size == 1:
        return device
    return torch.device("cuda", rank)


def run_worker(config: EngineConfig, rank: int, port: int, control: Connection, parent_pid: int) -> None:
    """The process entry point (spawned by `TensorParallelWorkers`)."""
    configure_logging(f"tp{rank}")
    exit_with_parent(parent_pid)
    print_stacks_on_signal()
    from tokenmill.engine.rank_model import load_rank_model  # after logging: the import is the slow part

    try:
        device = rank_device(config, rank)
        timeout = timedelta(seconds=config.collective_timeout_s)
        tp = init_tensor_parallel(
            rank, config.tensor_parallel_size, port, device, timeout, config.symmetric_all_reduce
        )
        rank_model = load_rank_model(config, device, tp)
        lora = rank_model.lora_layers() if config.lora_enabled else None
        kv = rank_model.plan_kv_cache()
        runner = rank_model.runner(kv, sampler=None, lora_step=None if lora is None else lora.step)
        logger.info("rank %d of %d ready on %s", rank, tp.size, device)
        serve_steps(runner, tp, control, lora)
    except Exception:
        logger.exception("tensor-parallel worker %d failed", rank)
        exit_now(1)
    exit_now(0)  # without tearing down the process group, which can wait for the other ranks


def serve_steps(
    runner: ModelRunner, tp: TensorParallel, control: Connection, lora: LoRAModel | None = None
) -> None:
    """Run rank 0's steps until it says stop. Between a message and the step's launch the worker only
    decodes the message into its staging memory and checks its collectives: the buffer the sampled
    tokens land in is made once, and the broadcast that fills it is queued on the device like the step
    (the next step's forward pass reads it from there), so the host goes straight back to waiting for
    rank 0. At the end it logs where this host's time went per step: receiving (mostly waiting for rank
    0's next message) against issuing the step."""
    previous_sampled: torch.Tensor | None = None
    receiver = ControlReceiver(control, runner.inputs.staging)
    sampled_tokens = SampledTokens(runner.device)
    timeline = timeline_from_env(tp.rank, runner.device)
    steps, receiving, issuing = 0, 0.0, 0.0
    while True:
        started = time.perf_counter()
        if timeline is not None:
            timeline.host("waiting", receiver.last_step + 1)
        message = receiver.receive(previous_sampled)
        if message is None:  # rank 0 said so, or is gone
            break
        if isinstance(message, LoRAFill):
            assert lora is not None, "rank 0 fills LoRA slots only with LoRA on"
            lora.fill_slot(message.slot, read_adapter(message.name, message.path, lora.max_rank))
            continue
        received = time.perf_counter()
        inputs, header = message
        tp.log.check(tp.rank, header.step, header.mark)
        if timeline is not None:
            timeline.host("received", header.step)
            timeline.device("begin", header.step)
        with torch.inference_mode():
            runner.run_model(inputs, header.use_graph)
            if timeline is not None:
                timeline.host("launched", header.step)
                timeline.device("forward", header.step)
            if len(inputs.logits_indices):
                previous_sampled = tp.broadcast_from_first(sampled_tokens.take(len(inputs.logits_indices)))
        steps += 1
        receiving += received - started
        issuing += time.perf_counter() - received
    if timeline is not None:
        timeline.save()
    if steps:
        logger.info(
            "rank %d: %d steps; per step %.0f us receiving (waits for rank 0 included), %.0f us issuing",
            tp.rank, steps, 1e6 * receiving / steps, 1e6 * issuing / steps,
        )  # fmt: skip


class SampledTokens:
    """Where rank 0's broadcast of a step's sampled tokens lands on a worker: one buffer, grown to the
    largest step, so no step allocates. Reusing it is safe: each broadcast is queued after the forward
    pass that read the previous tokens (on CUDA, the collective's stream waits for the compute stream)."""

    def __init__(self, device: torch.device) -> None:
        self._buffer = torch.empty(0, dtype=torch.long, device=device)

    def take(self, count: int) -> torch.Tensor:
        if count > len(self._buffer):
            self._buffer = torch.empty(
                max(count, 2 * len(self._buffer), 64), dtype=torch.long, device=self._buffer.device
            )
        return self._buffer[:count]
