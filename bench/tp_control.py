"""The host cost of the tensor-parallel control channel per decode step, without a model.

Rank 0 builds real decode inputs (the engine's `InputBuilder`, sequences growing one token a step, a new
KV block every `block_size` steps, continuation steps as async scheduling launches them) and sends them
to one spawned worker through the engine's control channel; the worker receives and stages them as it
does before its forward pass. Steps are sent every `--interval-ms` (a device step's time), so the
figures are latencies, not a queue. Per batch size it prints the medians (and p90) of:
  encode: rank 0's time to serialise a step; send: its time in the pipe write; bytes per message;
  ready: from rank 0's encode start to the worker's inputs staged (what delays the worker's launch);
  decode: the worker's time from the message's arrival to staged inputs.
Clocks: both processes read CLOCK_MONOTONIC (`time.perf_counter` on Linux), so `ready` spans them.
Usage: PYTHONPATH=. python bench/tp_control.py [--batches 1 256] [--context 1024] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

import numpy as np
import torch

from tokenmill.distributed.control import StepHeader, decode_step, encode_step, staged_in
from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.engine.step_inputs import InputBuilder
from tokenmill.sampling_params import SamplingParams

MAX_NUM_SEQS = 256


def _worker(device: str, receive: Connection, results: Connection) -> None:
    staging = HostStaging(torch.device(device))
    stage = staged_in(staging)
    previous = torch.zeros(MAX_NUM_SEQS, dtype=torch.long)
    stamps = []
    results.send("ready")
    while True:
        data = receive.recv_bytes()
        arrived = time.perf_counter()
        if data == b"stop":
            break
        staging.next_step()
        _, header = decode_step(data, previous, stage)
        stamps.append((header.step, arrived, time.perf_counter()))
    results.send(stamps)


def _sequences(batch: int, context: int, block_size: int) -> list[Sequence]:
    seqs = []
    params = SamplingParams(temperature=0)
    blocks = -(-(context + 1) // block_size)
    for index in range(batch):
        seq = Sequence(str(index), 0, [1] * context, params, torch.device("cpu"))
        seq.block_ids = list(range(index * 1000, index * 1000 + blocks))
        seq.num_computed_tokens = context - 1
        seqs.append(seq)
    return seqs


def measure(batch: int, args: argparse.Namespace) -> dict[str, float]:
    context = mp.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    results_in, results_out = context.Pipe(duplex=False)
    device = torch.device(args.device)
    worker_device = f"cuda:{min(1, torch.cuda.device_count() - 1)}" if device.type == "cuda" else "cpu"
    worker = context.Process(target=_worker, args=(worker_device, receive, results_out))
    worker.start()
    results_in.recv()  # the worker is up: no step waits for its start-up
    max_blocks = -(-args.max_model_len // args.block_size)
    null_block = 1000 * MAX_NUM_SEQS
    builder = InputBuilder(BlockTable(args.block_size, MAX_NUM_SEQS, max_blocks, null_block), device)
    seqs = _sequences(batch, args.context, args.block_size)
    token_source = torch.zeros(batch, dtype=torch.long, device=device)
    sent = []
    for step in range(1, args.steps + 1):
        for seq in seqs:  # the scheduler's part: a new block when the last one is full
            if seq.num_computed_tokens >= len(seq.block_ids) * args.block_size:
                seq.block_ids.append(seq.block_ids[-1] + 1)
        continues = step % args.fresh_every != 0
        scheduled = ScheduledBatch(list(seqs), [1] * batch, batch)
        inputs = builder.build_inputs(scheduled, token_source if continues else None, batch)
        started = time.perf_counter()
        data = encode_step(inputs, StepHeader(step, True, (step, 0)))
        encoded = time.perf_counter()
        send.send_bytes(data)
        sent.append((started, encoded - started, time.perf_counter() - encoded, len(data)))
        for seq in seqs:
            seq.num_computed_tokens += 1
            seq.token_ids.append(0)
        time.sleep(max(0.0, started + args.interval_ms / 1000 - time.perf_counter()))
    send.send_bytes(b"stop")
    stamps = results_in.recv()
    worker.join()
    skip = args.steps // 10  # warm-up
    ready = [stamp[2] - sent[stamp[0] - 1][0] for stamp in stamps][skip:]
    decode = [stamp[2] - stamp[1] for stamp in stamps][skip:]
    encode, send_s, sizes = (np.array(column[skip:]) for column in list(zip(*sent))[1:])
    us = 1e6
    return {
        "batch": batch,
        "encode_us": float(np.median(encode) * us),
        "send_us": float(np.median(send_s) * us),
        "bytes_continuation": int(np.median(sizes)),
        "bytes_max": int(sizes.max()),
        "ready_us": float(np.median(ready) * us),
        "ready_p90_us": float(np.percentile(ready, 90) * us),
        "decode_us": float(np.median(decode) * us),
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
    rows = [measure(batch, args) for batch in args.batches]
    for row in rows:
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
