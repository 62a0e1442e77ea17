"""A step's inputs as one flat binary message: a fixed header, then the arrays back to back.

Rank 0 writes the arrays of `StepInputs` (the ones the forward pass reads) into one reused buffer, and a
worker reads them as views of the buffer it received the message into: no pickling, no per-array
objects, and on CUDA no copy between receiving and uploading (the worker receives into pinned memory)
except the block table's, copied from the worker's mirror into staging.
The block table goes as the rows that changed since the last message, not whole: both sides keep the
same `TableMirror` of what was sent, and in decoding a row changes only when its sequence gets a new
block (once every `block_size` steps), so a decode step of 256 sequences costs kilobytes, not its table.
The host lists of `StepInputs` (query and context lengths) are derived from the arrays on arrival;
what only rank 0's sampler reads (the sampling sequences, the proposals) is not sent.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from tokenmill.distributed.trace import Mark
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.step_inputs import StepInputs
from tokenmill.kernels.lora_mapping import LoRAMapping

STEP = 0  # the first byte of a step message (the control channel's kind of message)
ALIGN = 8


class StepHeader(NamedTuple):
    step: int  # rank 0's count of steps sent, from 1
    use_graph: bool  # the step replays a CUDA graph
    mark: Mark  # rank 0's collectives before this step


class Shape(NamedTuple):
    """The sizes that fix the message's layout."""

    num_seqs: int
    num_decodes: int
    width: int
    num_rows: int
    num_tokens: int
    num_logits: int
    table_width: int
    num_changed_rows: int
    has_input_ids: bool
    num_lora_tiles: int  # -1: no LoRA mapping


_HEADER = struct.Struct("<BqqI?" + "i" * 8 + "?i")  # STEP, StepHeader, Shape


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


_HEADER_BYTES = _aligned(_HEADER.size)
_ITEMSIZE = {"int64": 8, "int32": 4}
Buffer = TypeVar("Buffer", np.ndarray, torch.Tensor)


Placed = tuple[str, str, tuple[int, ...], int]  # name, dtype, shape, offset in items of that dtype


@functools.lru_cache(maxsize=256)  # a decode batch's layout repeats step after step
def layout(shape: Shape) -> tuple[list[Placed], int]:
    """Where each array lies and the message's size in bytes: the one definition of the format, for
    both sides. Each array starts on a multiple of 8 bytes."""
    tokens, rows, tiles = shape.num_tokens, shape.num_rows, (shape.num_lora_tiles,)
    arrays = [
        ("input_ids", "int64", (tokens if shape.has_input_ids else 0,)),
        ("positions", "int64", (tokens,)),
        ("slot_mapping", "int64", (tokens,)),
        ("logits_indices", "int64", (shape.num_logits,)),
        ("seq_lens", "int32", (rows,)),
        ("query_start_loc", "int32", (rows + 1,)),
        ("changed_rows", "int32", (shape.num_changed_rows,)),
        ("changed_blocks", "int32", (shape.num_changed_rows, shape.table_width)),
    ]
    if shape.num_lora_tiles >= 0:
        arrays += [("token_slots", "int32", (tokens,)), ("sorted_tokens", "int32", (tokens,))]
        arrays += [(name, "int32", tiles) for name in ("tile_slots", "tile_starts", "tile_ends")]
    placed, offset = [], _HEADER_BYTES
    for name, dtype, dims in arrays:
        itemsize = _ITEMSIZE[dtype]
        placed.append((name, dtype, dims, offset // itemsize))
        offset += _aligned(math.prod(dims) * itemsize)
    return placed, offset


def views(buffer: Buffer, shape: Shape) -> dict[str, Buffer]:
    """The message's arrays as views of `buffer` (uint8 numpy array or tensor, the message from its
    start, as long as the message): one reinterpretation per dtype, then a slice per array."""
    arrays, _ = layout(shape)
    numpy = isinstance(buffer, np.ndarray)
    typed = {kind: buffer.view(np.dtype(kind) if numpy else getattr(torch, kind)) for kind in _ITEMSIZE}
    result = {}
    for name, dtype, dims, start in arrays:
        flat = typed[dtype][start : start + math.prod(dims)]
        result[name] = flat.reshape(dims) if len(dims) > 1 else flat
    return result


class ViewCache:
    """`views` of the messages of one side, made once per buffer and layout: a decode batch's layout
    repeats step after step, and each side writes or receives into the same few buffers, so a steady
    step slices nothing. A cached view keeps its buffer alive, so an address is never reused under it."""

    MAX_ENTRIES = 64

    def __init__(self) -> None:
        self._views: dict[tuple[int, Shape], dict] = {}

    def __call__(self, buffer: Buffer, shape: Shape) -> dict[str, Buffer]:
        address = buffer.ctypes.data if isinstance(buffer, np.ndarray) else buffer.data_ptr()
        key = (address, shape)
        arrays = self._views.get(key)
        if arrays is None:
            if len(self._views) >= self.MAX_ENTRIES:
                self._views.clear()
            arrays = self._views[key] = views(buffer, shape)
        return arrays


class TableMirror:
    """The block-table rows as the last message left them; rank 0 and each worker keep identical ones.
    It grows (with zeros) to the widest batch seen, the same way on both sides."""

    def __init__(self) -> None:
        self.table = np.zeros((0, 0), dtype=np.int32)

    def changes(self, rows: np.ndarray) -> np.ndarray:
        """The indices of the rows of `rows` (the step's [num_rows, width] table) that differ here."""
        seen = self._fit(*rows.shape)[: rows.shape[0], : rows.shape[1]]
        return np.flatnonzero((seen != rows).any(axis=1)).astype(np.int32)

    def apply(self, changed: np.ndarray, blocks: np.ndarray, num_rows: int, width: int) -> np.ndarray:
        """Write the changed rows; returns the step's table (a view)."""
        table = self._fit(num_rows, width)
        if len(changed):  # in steady decoding, most steps
            table[changed, :width] = blocks
        return table[:num_rows, :width]

    def _fit(self, num_rows: int, width: int) -> np.ndarray:
        rows, columns = self.table.shape
        if num_rows > rows or width > columns:
            grown = np.zeros((max(num_rows, rows), max(width, columns)), dtype=np.int32)
            grown[:rows, :columns] = self.table
            self.table = grown
        return self.table


class StepEncoder:
    """Rank 0's side: one reused buffer, rewritten for each step."""

    def __init__(self) -> None:
        self.mirror = TableMirror()
        self._buffer = np.empty(0, dtype=np.uint8)
        self._views = ViewCache()

    def encode(self, inputs: StepInputs, header: StepHeader) -> memoryview:
        """The step's message, valid until the next call."""
        table = inputs.block_tables.numpy()
        changed = self.mirror.changes(table)
        blocks = table[changed]
        self.mirror.apply(changed, blocks, *table.shape)
        lora = inputs.lora
        positions = inputs.positions.numpy()
        shape = Shape(
            inputs.num_seqs, inputs.num_decodes, inputs.width, len(table), len(positions),
            len(inputs.logits_indices), table.shape[1], len(changed), inputs.input_ids is not None,
            -1 if lora is None else len(lora.tile_slots),
        )  # fmt: skip
        values = {
            "input_ids": inputs.input_ids, "positions": positions, "slot_mapping": inputs.slot_mapping,
            "logits_indices": inputs.logits_indices, "seq_lens": inputs.seq_lens,
            "query_start_loc": inputs.query_start_loc, "changed_rows": changed, "changed_blocks": blocks,
        }  # fmt: skip
        if lora is not None:
            values.update((field.name, getattr(lora, field.name)) for field in dataclasses.fields(lora))
        _, size = layout(shape)
        if self._buffer.size < size:
            self._buffer = np.empty(2 * size, dtype=np.uint8)
        message = self._buffer[:size]
        _HEADER.pack_into(message, 0, STEP, header.step, *header.mark, header.use_graph, *shape)
        for name, target in self._views(message, shape).items():
            if target.size:
                value = values[name]
                target[...] = value.numpy() if isinstance(value, torch.Tensor) else value
        return memoryview(message)


class StepDecoder:
    """A worker's side: the inputs of a message, as views of the buffer it was received into (pinned
    on CUDA, so the step's uploads from it are asynchronous)."""

    def __init__(self) -> None:
        self.mirror = TableMirror()
        self.last_step = 0
        self._views = ViewCache()

    def decode(
        self, buffer: torch.Tensor, previous_sampled: torch.Tensor | None, staging: HostStaging
    ) -> tuple[StepInputs, StepHeader]:
        """`previous_sampled`: the input tokens of a continuation step; the step's block table is copied
        into `staging` (the mirror itself changes with the next message)."""
        _, step, count, signature, use_graph, *sizes = _HEADER.unpack_from(buffer.numpy())
        if step != self.last_step + 1:  # the table's changed rows are relative to the previous message
            raise RuntimeError(
                f"step message {step} arrived after {self.last_step}: the block table would be wrong"
            )
        self.last_step = step
        shape = Shape(*sizes)
        if not shape.has_input_ids and previous_sampled is None:
            raise RuntimeError("a continuation step arrived before any sampled tokens")
        arrays = self._views(buffer, shape)
        changed, blocks = arrays["changed_rows"].numpy(), arrays["changed_blocks"].numpy()
        table = self.mirror.apply(changed, blocks, shape.num_rows, shape.table_width)
        query_start_loc, seq_lens = arrays["query_start_loc"], arrays["seq_lens"]
        starts = query_start_loc.numpy()
        lora = None
        if shape.num_lora_tiles >= 0:
            lora = LoRAMapping(*(arrays[field.name] for field in dataclasses.fields(LoRAMapping)))
        inputs = StepInputs(
            input_ids=arrays["input_ids"] if shape.has_input_ids else None,
            token_source=None if shape.has_input_ids else previous_sampled,
            positions=arrays["positions"],
            slot_mapping=arrays["slot_mapping"],
            seq_lens=seq_lens,
            query_start_loc=query_start_loc,
            logits_indices=arrays["logits_indices"],
            block_tables=staging.fill("block_tables", table, torch.int32),
            num_seqs=shape.num_seqs,
            num_decodes=shape.num_decodes,
            width=shape.width,
            query_lens=(starts[1:] - starts[:-1]).tolist(),
            seq_lens_cpu=seq_lens.tolist(),
            sampling_seqs=[],
            lora=lora,
        )
        return inputs, StepHeader(step, use_graph, (count, signature))
