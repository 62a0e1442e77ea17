"""The control channel's one message per step: the step's inputs, as the input builder made them.

Rank 0 builds a step's inputs once (scheduler, block tables, slots) and sends them to every worker,
which runs the same forward pass on them. A message carries the batch's arrays, not its sequences, so
its cost does not grow with per-sequence Python objects. A continuation step (launched before the
previous step's tokens reached the host) carries no input tokens: each worker uses the tokens that
rank 0 broadcast after sampling the previous step. Each message also carries its step number and
rank 0's collective mark (`trace.py`), so a worker that went out of step stops before its next step.

With LoRA, rank 0 also sends `LoRAFill` messages: which adapter (by name and directory, read by each
worker itself) goes into which resident slot. One is sent before the step that first uses the slot,
and the pipe keeps them in order.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from tokenmill.distributed.trace import Mark
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.step_inputs import StepInputs

SHUTDOWN = b"shutdown"
LORA_FILL = b"lora-fill:"

_NOT_SENT = {"token_source", "sampling_seqs"}  # on the device, and rank 0's own

Stage = Callable[[str, np.ndarray], torch.Tensor]  # a received array -> the host tensor the step reads


class StepHeader(NamedTuple):
    step: int  # rank 0's count of steps sent, from 1
    use_graph: bool  # the step replays a CUDA graph
    mark: Mark  # rank 0's collectives before this step


def encode_step(inputs: StepInputs, header: StepHeader) -> bytes:
    fields = {
        field.name: _host_value(getattr(inputs, field.name))
        for field in dataclasses.fields(StepInputs)
        if field.name not in _NOT_SENT
    }
    message = (fields, inputs.token_source is not None, tuple(header))
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


@dataclasses.dataclass(frozen=True)
class LoRAFill:
    slot: int
    name: str
    path: str


def encode_lora_fill(fill: LoRAFill) -> bytes:
    return LORA_FILL + pickle.dumps(fill, protocol=pickle.HIGHEST_PROTOCOL)


def decode_lora_fill(data: bytes) -> LoRAFill | None:
    """The fill a message carries, or None if it is another message."""
    return pickle.loads(data[len(LORA_FILL) :]) if data.startswith(LORA_FILL) else None


def staged_in(staging: HostStaging) -> Stage:
    """Received arrays copied into the worker's staging buffers: pinned on CUDA, so the step's uploads
    stay asynchronous and the worker's host runs ahead of its device as rank 0's does."""

    def stage(name: str, value: np.ndarray) -> torch.Tensor:
        return staging.fill(name, value, torch.from_numpy(value).dtype)

    return stage


def decode_step(
    data: bytes, previous_sampled: torch.Tensor | None, stage: Stage | None = None
) -> tuple[StepInputs, StepHeader]:
    """The step's inputs (their token source: `previous_sampled`, for a continuation) and its header.
    `stage` places the arrays (default: tensors over the received memory)."""
    fields, continues, header = pickle.loads(data)
    if continues and previous_sampled is None:
        raise RuntimeError("a continuation step arrived before any sampled tokens")
    arrays = {name: value for name, value in fields.items() if isinstance(value, np.ndarray)}
    stage = stage or (lambda _, value: torch.from_numpy(value))
    tensors = {name: stage(name, value) for name, value in arrays.items()}
    inputs = StepInputs(
        **{**fields, **tensors},
        token_source=previous_sampled if continues else None,
        sampling_seqs=[],
    )
    return inputs, StepHeader(*header)


def _host_value(value: object) -> object:
    return value.numpy() if isinstance(value, torch.Tensor) else value
