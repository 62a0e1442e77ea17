"""One step's model inputs, built the same way for every kind of step: prefill chunks, decodes, or both.

The step's new tokens are flattened in batch order (decodes first). For each token the builder derives
its position and cache slot; for each sequence its context length after the step, where its tokens
start in the batch, and whether its last token is sampled (it is, once every known token is computed).
The eager path uploads these arrays; the CUDA-graph path copies them into its static buffers.

A pure-decode batch may be padded up to a captured graph's size: padding rows are sequences with no
blocks and one new token at position 0, so they attend to, and write into, only the null block.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.kernels.lora_mapping import NO_ADAPTER, LoRAMapping, tiles


@dataclass
class StepInputs:
    """Host tensors (pinned on CUDA) and lists. Arrays over rows or tokens include the padding rows;
    `num_seqs` counts the real sequences."""

    input_ids: torch.Tensor | None  # [num_tokens] int64; None when `token_source` holds them
    token_source: torch.Tensor | None  # a previous step's sampled tokens, still on the device
    positions: torch.Tensor  # [num_tokens] int64
    slot_mapping: torch.Tensor  # [num_tokens] int64: block * block_size + offset
    seq_lens: torch.Tensor  # [num_rows] int32: context length after this step
    query_start_loc: torch.Tensor  # [num_rows + 1] int32: where each row's tokens start in the batch
    logits_indices: torch.Tensor  # [len(sampling_seqs)] int64: the last token of each sampling sequence
    block_tables: torch.Tensor  # [num_rows, widest block list] int32, null-padded
    num_seqs: int
    num_decodes: int  # the first rows that contribute one token each (padding rows included)
    query_lens: list[int]  # per row
    seq_lens_cpu: list[int]  # per row
    sampling_seqs: list[Sequence]
    lora: LoRAMapping | None = None  # with LoRA on: each token's adapter slot, grouped by slot (host)

    @property
    def num_rows(self) -> int:
        return len(self.query_lens)

    @property
    def num_real_tokens(self) -> int:
        return len(self.positions) - (self.num_rows - self.num_seqs)


class InputBuilder:
    def __init__(self, block_table: BlockTable, device: torch.device, lora_slots: int = 0) -> None:
        """`lora_slots`: resident LoRA adapter slots (0: LoRA off)."""
        self.block_table = block_table
        self.staging = HostStaging(device)
        self.lora_slots = lora_slots

    def build_inputs(
        self, batch: ScheduledBatch, token_source: torch.Tensor | None = None, num_rows: int | None = None
    ) -> StepInputs:
        """The inputs of `batch`, padded to `num_rows` rows (a pure-decode batch only). With
        `token_source`, the input tokens are that tensor's, which the host does not know yet."""
        seqs = batch.seqs
        num_seqs = len(seqs)
        num_rows = num_rows or num_seqs
        assert num_rows == num_seqs or batch.num_decodes == num_seqs, "only decode batches are padded"
        assert token_source is None or len(token_source) == batch.num_tokens, "one device token per new token"
        self.staging.next_step()
        padding = num_rows - num_seqs
        query_lens = np.array(batch.num_new_tokens + [1] * padding, dtype=np.int64)
        computed = np.array([seq.num_computed_tokens for seq in seqs] + [0] * padding, dtype=np.int64)
        seq_lens = computed + query_lens
        ends = np.cumsum(query_lens)
        num_tokens = int(ends[-1])
        rows = np.repeat(np.arange(num_rows), query_lens)
        positions = np.arange(num_tokens) + np.repeat(seq_lens - ends, query_lens)

        table_rows = self.block_table.update(seqs, num_rows)
        slots = self.block_table.compute_slot_mapping(rows, positions)
        samples = seq_lens[:num_seqs] >= np.array([len(seq.token_ids) for seq in seqs], dtype=np.int64)
        stage = self.staging.fill
        input_ids = None
        if token_source is None:
            known = itertools.chain.from_iterable(
                seq.token_ids[start:end]
                for seq, start, end in zip(seqs, computed.tolist(), seq_lens.tolist())
            )
            ids = np.zeros(num_tokens, dtype=np.int64)  # padding rows read token 0
            ids[: num_tokens - padding] = np.fromiter(known, np.int64, num_tokens - padding)
            input_ids = stage("input_ids", ids, torch.long)
        return StepInputs(
            input_ids=input_ids,
            token_source=token_source,
            positions=stage("positions", positions, torch.long),
            slot_mapping=stage("slot_mapping", slots, torch.long),
            seq_lens=stage("seq_lens", seq_lens, torch.int32),
            query_start_loc=stage("query_start_loc", np.concatenate(([0], ends)), torch.int32),
            logits_indices=stage("logits_indices", ends[:num_seqs][samples] - 1, torch.long),
            block_tables=stage("block_tables", table_rows, torch.int32),
            num_seqs=num_seqs,
            num_decodes=batch.num_decodes + padding,
            query_lens=query_lens.tolist(),
            seq_lens_cpu=seq_lens.tolist(),
            sampling_seqs=list(seqs) if samples.all() else list(itertools.compress(seqs, samples.tolist())),
            lora=self._lora_mapping(seqs, padding, query_lens) if self.lora_slots else None,
        )

    def _lora_mapping(self, seqs: list[Sequence], padding: int, query_lens: np.ndarray) -> LoRAMapping:
        """Each token's LoRA slot (its sequence's; padding rows run under none), grouped by slot."""
        row_slots = np.fromiter((seq.lora_slot for seq in seqs), np.int32, len(seqs))
        token_slots = np.repeat(
            np.concatenate((row_slots, np.full(padding, NO_ADAPTER, np.int32))), query_lens
        )
        order, tile_slots, tile_starts, tile_ends = tiles(token_slots, self.lora_slots)
        stage = self.staging.fill
        return LoRAMapping(
            token_slots=stage("lora_token_slots", token_slots, torch.int32),
            sorted_tokens=stage("lora_sorted_tokens", order, torch.int32),
            tile_slots=stage("lora_tile_slots", tile_slots, torch.int32),
            tile_starts=stage("lora_tile_starts", tile_starts, torch.int32),
            tile_ends=stage("lora_tile_ends", tile_ends, torch.int32),
        )
