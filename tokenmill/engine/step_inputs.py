"""One step's model inputs, built the same way for every kind of step: prefill chunks, decodes, or both.

The step's new tokens are flattened in batch order (decodes first). For each token the builder derives
its position and cache slot; for each sequence its context length after the step, where its tokens
start in the batch, and whether its last token is sampled (it is, once every known token is computed).
The eager path uploads these arrays; the CUDA-graph path copies them into its static buffers.

A sequence verifying proposals is a chunk of its last known token and the proposals, with logits at every
one of its positions (see tokenmill/spec_decode/).

A pure-decode batch may be padded up to a captured graph's size: padding rows are sequences with no
blocks and one new token at position 0, so they attend to, and write into, only the null block. A verify
batch replayed by a graph of `width` tokens per row is padded twice: each sequence's chunk up to `width`
tokens (the extra tokens write the null block and are never sampled), and padding rows of `width` tokens.
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
    logits_indices: torch.Tensor  # int64: the last token of each sampling sequence (all its proposals' too)
    block_tables: torch.Tensor  # [num_rows, widest block list] int32, null-padded
    num_seqs: int
    num_decodes: int  # the first rows that contribute one token each (padding rows included)
    width: int  # tokens per row of a graph-padded verify step; 1 otherwise
    query_lens: list[int]  # per row
    seq_lens_cpu: list[int]  # per row
    sampling_seqs: list[Sequence]
    lora: LoRAMapping | None = None  # with LoRA on: each token's adapter slot, grouped by slot (host)
    proposals: list[list[int]] | None = None  # per sampling sequence, when the batch speculates

    @property
    def num_rows(self) -> int:
        return len(self.query_lens)


class InputBuilder:
    def __init__(self, block_table: BlockTable, device: torch.device, lora_slots: int = 0) -> None:
        """`lora_slots`: resident LoRA adapter slots (0: LoRA off)."""
        self.block_table = block_table
        self.staging = HostStaging(device)
        self.lora_slots = lora_slots

    def build_inputs(
        self,
        batch: ScheduledBatch,
        token_source: torch.Tensor | None = None,
        num_rows: int | None = None,
        width: int = 1,
    ) -> StepInputs:
        """The inputs of `batch`, padded to `num_rows` rows (a pure-decode batch, or with `width` > 1 a
        verify batch of decodes, each padded to `width` tokens). With `token_source`, the input tokens
        are that tensor's, which the host does not know yet."""
        seqs = batch.seqs
        num_seqs = len(seqs)
        num_rows = num_rows or num_seqs
        padded = width > 1 or batch.num_decodes == num_seqs
        assert num_rows == num_seqs or padded, "only decode and verify batches are padded"
        assert token_source is None or len(token_source) == batch.num_tokens, "one device token per new token"
        self.staging.next_step()
        padding = num_rows - num_seqs
        new_lens = np.array(batch.num_new_tokens + [width] * padding, dtype=np.int64)
        query_lens = np.maximum(new_lens, width)
        assert width == 1 or (query_lens == width).all(), "a verify chunk fits its graph's width"
        computed = np.array([seq.num_computed_tokens for seq in seqs] + [0] * padding, dtype=np.int64)
        seq_lens = computed + query_lens
        ends = np.cumsum(query_lens)
        num_tokens = int(ends[-1])
        rows = np.repeat(np.arange(num_rows), query_lens)
        offsets = np.arange(num_tokens) - np.repeat(ends - query_lens, query_lens)
        positions = offsets + computed[rows]

        table_rows = self.block_table.update(seqs, num_rows)
        slots = self.block_table.compute_slot_mapping(rows, positions)
        unused = offsets >= new_lens[rows]  # a verify chunk's padding: it writes only the null block
        slots[unused] = self.block_table.null_block * self.block_table.block_size
        new_ends = (ends - query_lens + new_lens)[:num_seqs]
        num_known = np.fromiter((len(seq.token_ids) for seq in seqs), np.int64, num_seqs)
        samples = (computed + new_lens)[:num_seqs] >= num_known
        proposals = batch.proposals
        logits_indices = _logits_indices(new_ends, samples, proposals)
        stage = self.staging.fill
        input_ids = None
        if token_source is None:
            chunks = (
                seq.token_ids[start:end]
                for seq, start, end in zip(seqs, computed.tolist(), seq_lens.tolist())
            )
            if proposals:
                chunks = (chunk + draft for chunk, draft in zip(chunks, proposals))
            known = itertools.chain.from_iterable(chunks)
            ids = np.zeros(num_tokens, dtype=np.int64)  # padding reads token 0
            ids[~unused & (rows < num_seqs)] = np.fromiter(known, np.int64, batch.num_tokens)
            input_ids = stage("input_ids", ids, torch.long)
        return StepInputs(
            input_ids=input_ids,
            token_source=token_source,
            positions=stage("positions", positions, torch.long),
            slot_mapping=stage("slot_mapping", slots, torch.long),
            seq_lens=stage("seq_lens", seq_lens, torch.int32),
            query_start_loc=stage("query_start_loc", np.concatenate(([0], ends)), torch.int32),
            logits_indices=stage("logits_indices", logits_indices, torch.long),
            block_tables=stage("block_tables", table_rows, torch.int32),
            num_seqs=num_seqs,
            num_decodes=0 if width > 1 else batch.num_decodes + padding,
            width=width,
            query_lens=query_lens.tolist(),
            seq_lens_cpu=seq_lens.tolist(),
            sampling_seqs=list(seqs) if samples.all() else list(itertools.compress(seqs, samples.tolist())),
            proposals=list(itertools.compress(proposals, samples.tolist())) if proposals else None,
            lora=self._lora_mapping(seqs, padding, query_lens) if self.lora_slots else None,
        )

    def _lora_mapping(self, seqs: list[Sequence], padding: int, query_lens: np.ndarray) -> LoRAMapping:
        """Each token's LoRA slot (its sequence's; padding rows run under none), grouped by slot: host
        arrays of this step alone (`LoRAStep.load` packs them into its own pinned buffer for one upload)."""
        row_slots = np.fromiter((seq.lora_slot for seq in seqs), np.int32, len(seqs))
        token_slots = np.repeat(
            np.concatenate((row_slots, np.full(padding, NO_ADAPTER, np.int32))), query_lens
        )
        order, tile_slots, tile_starts, tile_ends = tiles(token_slots, self.lora_slots)
        return LoRAMapping(
            token_slots=torch.from_numpy(token_slots),
            sorted_tokens=torch.from_numpy(order),
            tile_slots=torch.from_numpy(tile_slots),
            tile_starts=torch.from_numpy(tile_starts),
            tile_ends=torch.from_numpy(tile_ends),
        )


def _logits_indices(ends: np.ndarray, samples: np.ndarray, proposals: list[list[int]] | None) -> np.ndarray:
    """The tokens whose logits are needed: each sampling sequence's last, preceded by one per proposal."""
    if not proposals:
        return ends[samples] - 1
    counts = np.array([len(draft) + 1 for draft in proposals], dtype=np.int64)[samples]
    starts = ends[samples] - counts
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets
