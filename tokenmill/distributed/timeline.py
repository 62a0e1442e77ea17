"""Each tensor-parallel rank's per-step event log, for finding where a step's time goes across ranks.

Off unless TOKENMILL_TP_TIMELINE names a directory. Then every rank records, per step, named host stamps
(`time.perf_counter`: CLOCK_MONOTONIC on Linux, one clock for every process of the host, so rank 0's
"sent" and a worker's "received" compare directly) and, on CUDA, events on its stream at named points,
which `save` maps onto the same host clock (through one event recorded on an idle stream at a known
host time) and writes with the stamps to `rank<r>.json`. The log's order is the order the rank did
things in, so tests can assert orderings by position rather than by time. `bench/tp_timeline.py` turns
the files into per-step figures: when rank 0 sends against when it launches, how long a worker takes
from a message to its launch, which rank's device reached each step first.

Recording is a list append (and an event record on CUDA) per point; the events are made in advance.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tokenmill.engine.model_runner import Launch, ModelRunner
    from tokenmill.engine.sequence import Sequence

TIMELINE_ENV = "TOKENMILL_TP_TIMELINE"
EVENTS_AHEAD = 4096  # CUDA events made at once, ahead of use (a few per step)

Stamp = tuple[str, int, float]  # what, step, seconds on the host clock


class StepTimeline:
    def __init__(self, rank: int, device: torch.device, directory: Path) -> None:
        self.rank = rank
        self.path = directory / f"rank{rank}.json"
        self.host_stamps: list[Stamp] = []
        self._cuda = device.type == "cuda"
        self._device_marks: list[tuple[str, int, torch.cuda.Event]] = []
        self._spare: list[torch.cuda.Event] = []
        self._origin: tuple[float, torch.cuda.Event] | None = None
        if self._cuda:
            self._spare = self._new_events()
            torch.cuda.synchronize(device)
            origin = torch.cuda.Event(enable_timing=True)
            at = time.perf_counter()
            origin.record()  # the stream is idle: it fires at once (a few µs after `at`)
            self._origin = (at, origin)

    def host(self, what: str, step: int) -> None:
        self.host_stamps.append((what, step, time.perf_counter()))

    def device(self, what: str, step: int) -> None:
        """Mark the current stream here: the time its work up to this point finished (CUDA only)."""
        if not self._cuda:
            return
        if not self._spare:
            self._spare = self._new_events()
        event = self._spare.pop()
        event.record()
        self._device_marks.append((what, step, event))

    @staticmethod
    def _new_events() -> list[torch.cuda.Event]:
        return [torch.cuda.Event(enable_timing=True) for _ in range(EVENTS_AHEAD)]

    def save(self) -> None:
        """Write the log (waits for the device to reach every mark)."""
        device_stamps = []
        if self._origin is not None:
            at, origin = self._origin
            torch.cuda.synchronize()
            device_stamps = [
                (what, step, at + origin.elapsed_time(e) / 1e3) for what, step, e in self._device_marks
            ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({"rank": self.rank, "host": self.host_stamps, "device": device_stamps})
        )


def timeline_from_env(rank: int, device: torch.device) -> StepTimeline | None:
    directory = os.environ.get(TIMELINE_ENV)
    return StepTimeline(rank, device, Path(directory)) if directory else None


def load_timeline(directory: Path, rank: int) -> dict[str, list[Stamp]]:
    """A saved log: {"host": [(what, step, seconds)...], "device": [...]}, each in recording order."""
    data = json.loads((directory / f"rank{rank}.json").read_text())
    return {kind: [tuple(stamp) for stamp in data[kind]] for kind in ("host", "device")}


def stamp_token_waits(runner: ModelRunner, timeline: StepTimeline) -> None:
    """On rank 0: stamp "waiting" and "tokens" around each wait for a step's sampled tokens (the
    runner's `collect`, wrapped on this instance). Steps are collected in the order they were launched,
    one collect each, so the i-th collect is step i's."""
    collect = runner.collect
    steps = itertools.count(1)

    def stamped(launch: Launch) -> list[tuple[Sequence, int]]:
        step = next(steps)
        timeline.host("waiting", step)
        sampled = collect(launch)
        timeline.host("tokens", step)
        return sampled

    runner.collect = stamped  # type: ignore[method-assign]
