"""The host cost of the tensor-parallel control channel per decode step, without a model.

Rank 0 builds real decode inputs (the engine's `InputBuilder`, sequences growing one token a step, a new
KV block every `block_size` steps, continuation steps as async scheduling launches them) and sends them
through the engine's control channel; the worker's end receives and stages them as before its forward
pass. Per batch size it prints the medians (and p90, min) of, first with both ends in one process:
  rank0: rank 0's time to encode a step and write it to the pipe; worker: the time to read and stage it;
then with a spawned worker, the steps sent every `--interval-ms` (a device step's time, so the figures
are latencies, not a queue): bytes per message (the median: a continuation step's; the largest: the
  first, with the whole block table);
  ready: from rank 0's encode start to the worker's inputs staged (what delays the worker's launch);
  decode: the worker's time from the message's arrival (its pipe readable) to staged inputs.
Clocks: both processes read CLOCK_MONOTONIC (`time.perf_counter` on Linux), so `ready` spans them.
Usage: PYTHONPATH=. python bench/tp_control.py [--batches 1 256] [--context 1024] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import numpy as np
import torch

from tokenmill.distributed.control import ControlReceiver, ControlSender
from tokenmill.distributed.step_message import StepEncoder, StepHeader
from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.engine.step_inputs import InputBuilder, StepInputs
from tokenmill.sampling_params import SamplingParams

MAX_NUM_SEQS = 256


def _worker(device: str, receive: Connection, results: Connection) -> None:
    receiver = ControlReceiver(receive, HostStaging(torch.device(device)))
    previous = torch.zeros(MAX_NUM_SEQS, dtype=torch.long)
    stamps = []
    results.send("ready")
    while True:
        receive.poll(None)
        arrived = time.perf_counter()
        message = receiver.receive(previous)
        if message is None:
            break
        _, header = message
        stamps.append((header.step, arrived, time.perf_counter()))
    results.send(stamps)


def _sequences(batch: int, context: int, block_size: int) -> list[Sequence]:
    seqs = []
    params = SamplingParams(temperature=0)
    for index in range(batch):  # contexts staggered, so their new blocks come at different steps
        tokens = context + index % block_size
        seq = Sequence(str(index), 0, [1] * tokens, params, torch.device("cpu"))
        seq.block_ids = list(range(index * 1000, index * 1000 + -(-(tokens + 1) // block_size)))
        seq.num_computed_tokens = tokens - 1
        seqs.append(seq)
    return seqs


def _decode_steps(batch: int, args: argparse.Namespace, device: torch.device) -> Iterator[StepInputs]:
    """The inputs of `args.steps` decode steps of `batch` sequences, as async scheduling launches them."""
    max_blocks = -(-args.max_model_len // args.block_size)
    null_block = 1000 * MAX_NUM_SEQS
    builder = InputBuilder(BlockTable(args.block_size, MAX_NUM_SEQS, max_blocks, null_block), device)
    seqs = _sequences(batch, args.context, args.block_size)
    token_source = torch.zeros(batch, dtype=torch.long, device=device)
    for step in range(1, args.steps + 1):
        for seq in seqs:  # the scheduler's part: a new block when the last one is full
            if seq.num_computed_tokens >= len(seq.block_ids) * args.block_size:
                seq.block_ids.append(seq.block_ids[-1] + 1)
        continues = step % args.fresh_every != 0
        scheduled = ScheduledBatch(list(seqs), [1] * batch, batch)
        yield builder.build_inputs(scheduled, token_source if continues else None, batch)
        for seq in seqs:
            seq.num_computed_tokens += 1
            seq.token_ids.append(0)


def across_processes(batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Paced steps to a spawned worker: what the worker's launch waits for."""
    context = mp.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    results_in, results_out = context.Pipe(duplex=False)
    device = torch.device(args.device)
    worker_device = f"cuda:{min(1, torch.cuda.device_count() - 1)}" if device.type == "cuda" else "cpu"
    worker = context.Process(target=_worker, args=(worker_device, receive, results_out))
    worker.start()
    results_in.recv()  # the worker is up: no step waits for its start-up
    sender, sizer = ControlSender([send]), StepEncoder()  # the sizer's messages are the sender's
    sent = []
    for step, inputs in enumerate(_decode_steps(batch, args, device), start=1):
        header = StepHeader(step, True, (step, 0))
        started = time.perf_counter()
        sender.send_step(inputs, header)
        sent.append((started, len(sizer.encode(inputs, header))))
        time.sleep(max(0.0, started + args.interval_ms / 1000 - time.perf_counter()))
    sender.send_shutdown()
    stamps = results_in.recv()
    worker.join()
    skip = args.steps // 10  # warm-up
    ready = np.array([stamp[2] - sent[stamp[0] - 1][0] for stamp in stamps][skip:]) * 1e6
    decode = np.array([stamp[2] - stamp[1] for stamp in stamps][skip:]) * 1e6
    sizes = np.array([size for _, size in sent][skip:])
    return {
        "bytes_continuation": int(np.median(sizes)),
        "bytes_max": int(sizes.max()),
        "ready_us": float(np.median(ready)),
        "ready_p90_us": float(np.percentile(ready, 90)),
        "decode_us": float(np.median(decode)),
    }


def in_process(batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Both ends in this process, unpaced: each side's own CPU time per step (send, then receive),
    without the wake-ups of a second process; the least figure is the least disturbed."""
    device = torch.device(args.device)
    rank0_end, worker_end = mp.Pipe(duplex=True)  # a socket pair: room for a whole first message
    sender, receiver = ControlSender([rank0_end]), ControlReceiver(worker_end, HostStaging(device))
    previous = torch.zeros(MAX_NUM_SEQS, dtype=torch.long)
    rank0, worker = [], []
    for step, inputs in enumerate(_decode_steps(batch, args, device), start=1):
        started = time.perf_counter()
        sender.send_step(inputs, StepHeader(step, True, (step, 0)))
        sent = time.perf_counter()
        receiver.receive(previous)
        rank0.append(sent - started)
        worker.append(time.perf_counter() - sent)
    skip = args.steps // 10
    rank0_us, worker_us = np.array(rank0[skip:]) * 1e6, np.array(worker[skip:]) * 1e6
    return {
        "rank0_us": float(np.median(rank0_us)),
        "rank0_min_us": float(rank0_us.min()),
        "worker_us": float(np.median(worker_us)),
        "worker_min_us": float(worker_us.min()),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--context", type=int, default=1024, help="tokens of each sequence at the start")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--fresh-every", type=int, default=50, help="every Nth step is not a continuation")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = [{"batch": b, **in_process(b, args), **across_processes(b, args)} for b in args.batches]
    for row in rows:
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
