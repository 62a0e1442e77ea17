"""The block tables of a step's sequences, kept on the host and on the device across steps, and the one
place where a token's position becomes a KV-cache slot.

Row i lists the KV blocks of the step's i-th sequence; entries past a sequence's blocks name the null
block. The host copy is pinned on CUDA so its upload is asynchronous, and there are two host copies
used by alternate steps: with async scheduling a step is prepared while the previous step's upload may
still wait in the stream. A row is rewritten only when its sequence or that sequence's block list
changed, which in steady decoding happens once every `block_size` steps. The device copy never moves,
so CUDA graphs read it directly.

Rows added to pad a batch up to a captured graph size are sequences without blocks: they read and write
only the null block, which no live sequence uses.
"""

from __future__ import annotations

import numpy as np
import torch

from tokenmill.engine.sequence import Sequence

_RowKey = tuple[int, int, int]  # (seq_id, block_generation, number of blocks) of the sequence in a row
_PADDING: _RowKey = (-1, 0, 0)


class BlockTable:
    def __init__(
        self,
        block_size: int,
        max_num_seqs: int,
        max_blocks_per_seq: int,
        null_block: int,
        device: torch.device,
    ) -> None:
        self.block_size = block_size
        self.null_block = null_block
        shape = (max_num_seqs, max_blocks_per_seq)
        pin = device.type == "cuda"
        self._host = [torch.full(shape, null_block, dtype=torch.int32, pin_memory=pin) for _ in range(2)]
        self._row_keys: list[list[_RowKey]] = [[_PADDING] * max_num_seqs for _ in range(2)]
        self._current = 0
        self._num_rows, self._width = 0, 1
        self.device_table = torch.full(shape, null_block, dtype=torch.int32, device=device)

    @property
    def host_table(self) -> np.ndarray:
        """The host rows of the current step (a view of the pinned buffer)."""
        return self._host[self._current].numpy()

    def update(self, seqs: list[Sequence], num_rows: int) -> None:
        """Switch to the other host copy and make its first `num_rows` rows those of `seqs`, then
        padding rows."""
        self._current ^= 1
        table, keys = self.host_table, self._row_keys[self._current]
        for row in range(num_rows):
            seq = seqs[row] if row < len(seqs) else None
            key = _PADDING if seq is None else (seq.seq_id, seq.block_generation, len(seq.block_ids))
            old = keys[row]
            if key == old:
                continue
            first = old[2] if key[:2] == old[:2] and key[2] > old[2] else 0  # blocks are only ever appended
            if seq is not None:
                table[row, first : key[2]] = seq.block_ids[first:]
            table[row, key[2] : old[2]] = self.null_block
            keys[row] = key
        self._num_rows = num_rows
        self._width = max(1, max((len(seq.block_ids) for seq in seqs), default=0))

    def compute_slot_mapping(self, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The cache slot of each token: the sequence in row `rows[i]` at position `positions[i]`.
        Padding rows hold only the null block, so their tokens land in its slots."""
        blocks = self.host_table[rows, positions // self.block_size].astype(np.int64)
        return blocks * self.block_size + positions % self.block_size

    def commit(self) -> torch.Tensor:
        """Queue the upload of the rows set by `update`; returns them on the device, as wide as the
        longest sequence's block list."""
        rows, width = self._num_rows, self._width
        self.device_table[:rows, :width].copy_(self._host[self._current][:rows, :width], non_blocking=True)
        return self.device_table[:rows, :width]
