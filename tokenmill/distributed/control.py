"""The control channel from rank 0 to each tensor-parallel worker: one pipe message per step.

Rank 0 builds a step's inputs once (scheduler, block tables, slots) and sends them to every worker,
which runs the same forward pass on them. A step message is a flat binary layout (`step_message.py`):
rank 0 writes it into one reused buffer and the worker receives it straight into its staging memory
(pinned on CUDA), so neither side pickles or allocates per step, and the worker's host runs ahead of
its device as rank 0's does. A continuation step (launched before the previous step's tokens reached
the host) carries no input tokens: each worker uses the tokens that rank 0 broadcast after sampling
the previous step. Each message also carries its step number and rank 0's collective mark
(`trace.py`), so a worker that went out of step stops before its next step.

With LoRA, rank 0 also sends `LoRAFill` messages (pickled: they are rare): which adapter (by name and
directory, read by each worker itself) goes into which resident slot. One is sent before the step that
first uses the slot, and the pipe keeps them in order. The first byte of every message says its kind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
from multiprocessing import BufferTooShort
from multiprocessing.connection import Connection

import numpy as np
import torch

from tokenmill.distributed.step_message import STEP, StepDecoder, StepEncoder, StepHeader
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.step_inputs import StepInputs

LORA_FILL = 1
SHUTDOWN = 2
_FIRST_CAPACITY = 4096  # bytes; the receive buffer grows to the largest message


@dataclasses.dataclass(frozen=True)
class LoRAFill:
    slot: int
    name: str
    path: str


Received = tuple[StepInputs, StepHeader] | LoRAFill | None


class ControlSender:
    """Rank 0's end of every worker's pipe."""

    def __init__(self, connections: list[Connection]) -> None:
        self._connections = connections
        self._encoder = StepEncoder()

    def send_step(self, inputs: StepInputs, header: StepHeader) -> None:
        self._send(self._encoder.encode(inputs, header))

    def send_lora_fill(self, fill: LoRAFill) -> None:
        self._send(bytes([LORA_FILL]) + pickle.dumps(fill, protocol=pickle.HIGHEST_PROTOCOL))

    def send_shutdown(self) -> None:
        """Tell every worker still listening to exit."""
        for connection in self._connections:
            with contextlib.suppress(OSError):  # that worker is gone already
                connection.send_bytes(bytes([SHUTDOWN]))

    def _send(self, message: bytes | memoryview) -> None:
        """Raises OSError if a worker's end is closed."""
        for connection in self._connections:
            connection.send_bytes(message)


class ControlReceiver:
    """A worker's end of its pipe. Messages land in the current set of the worker's `HostStaging`; a
    step moves on to the other set first, so a step's message stays untouched until the device has
    read it (the staging's rule), while a LoRA fill or shutdown takes no set."""

    def __init__(self, connection: Connection, staging: HostStaging) -> None:
        self._connection = connection
        self._staging = staging
        self._decoder = StepDecoder()
        self._capacity = _FIRST_CAPACITY
        self._set_used = True  # the current staging set holds a step that may still be read

    @property
    def last_step(self) -> int:
        """The number of the last step received (0 before the first)."""
        return self._decoder.last_step

    def receive(self, previous_sampled: torch.Tensor | None) -> Received:
        """The next step (its inputs, with `previous_sampled` as a continuation's input tokens, and its
        header), a LoRA fill, or None once rank 0 says to stop or is gone."""
        if self._set_used:
            self._staging.next_step()
            self._set_used = False
        try:
            message = self._receive_bytes()
        except EOFError:
            return None
        kind = int(message[0])
        if kind == SHUTDOWN:
            return None
        if kind == LORA_FILL:
            return pickle.loads(message[1:].numpy().tobytes())
        if kind != STEP:
            raise ValueError(f"unknown control message kind {kind}")
        self._set_used = True
        return self._decoder.decode(message, previous_sampled, self._staging)

    def _receive_bytes(self) -> torch.Tensor:
        buffer = self._staging.tensor("control", self._capacity, torch.uint8)
        try:
            size = self._connection.recv_bytes_into(buffer.numpy())
        except BufferTooShort as short:
            data = short.args[0]
            size = len(data)
            self._capacity = max(self._capacity, 2 * size)
            buffer = self._staging.tensor("control", self._capacity, torch.uint8)
            buffer.numpy()[:size] = np.frombuffer(data, dtype=np.uint8)
        return buffer[:size]
