"""The block tables of a step's sequences, kept across steps, and the one place where a token's position
becomes a KV-cache slot.

Row i lists the KV blocks of the step's i-th sequence; entries past a sequence's blocks name the null
block. The table persists across steps and a row is rewritten only when its sequence or that sequence's
block list changed, which in steady decoding happens once every `block_size` steps; so a step costs a
comparison per sequence, not a conversion of every block list.

Rows added to pad a batch up to a captured graph size are sequences without blocks: they read and write
only the null block, which no live sequence uses.
"""

from __future__ import annotations

import numpy as np

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
    ) -> None:
        self.block_size = block_size
        self.max_blocks_per_seq = max_blocks_per_seq
        self.null_block = null_block
        self.host_table = np.full((max_num_seqs, max_blocks_per_seq), null_block, dtype=np.int32)
        self._row_keys: list[_RowKey] = [_PADDING] * max_num_seqs
        self._row_widths = np.zeros(max_num_seqs, dtype=np.int64)  # blocks in each row, for the width

    def update(self, seqs: list[Sequence], num_rows: int) -> np.ndarray:
        """Make the first `num_rows` rows those of `seqs`, then padding rows; returns them, as wide as
        the longest block list (a view of the table)."""
        table, keys, widths = self.host_table, self._row_keys, self._row_widths
        changed = [
            row
            for row, seq in enumerate(seqs)
            if keys[row] != (seq.seq_id, seq.block_generation, len(seq.block_ids))
        ]
        changed += [row for row in range(len(seqs), num_rows) if keys[row] != _PADDING]
        for row in changed:
            seq = seqs[row] if row < len(seqs) else None
            key = _PADDING if seq is None else (seq.seq_id, seq.block_generation, len(seq.block_ids))
            old = keys[row]
            first = old[2] if key[:2] == old[:2] and key[2] > old[2] else 0  # blocks are only ever appended
            if seq is not None:
                table[row, first : key[2]] = seq.block_ids[first:]
            table[row, key[2] : old[2]] = self.null_block
            keys[row] = key
            widths[row] = key[2]
        width = max(1, int(widths[: len(seqs)].max(initial=0)))
        return table[:num_rows, :width]

    def compute_slot_mapping(self, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The cache slot of each token: the sequence in row `rows[i]` at position `positions[i]`.
        Padding rows hold only the null block, so their tokens land in its slots."""
        blocks = self.host_table[rows, positions // self.block_size].astype(np.int64)
        return blocks * self.block_size + positions % self.block_size
