"""CUDA graphs of the model's forward pass over pure-decode batches.

One graph per size in GRAPH_BATCH_SIZES up to `max_num_seqs` (at most 512), captured largest first into
one shared memory pool. A decode batch replays the graph of the next size up, its inputs padded to that
size by the input builder. Every graph reads the same static buffers, so replaying is a few copies
into them and one launch.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

import torch

from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.step_inputs import StepInputs
from tokenmill.kernels.attention import AttentionMetadata
from tokenmill.models.llama import LlamaForCausalLM

GRAPH_BATCH_SIZES = (1, 2, 4, 8, *range(16, 513, 16))
_COPIED = ("positions", "slot_mapping", "seq_lens")  # per-step inputs; query_start_loc is always 0..size


class DecodeGraphs:
    def __init__(self) -> None:
        self._sizes: list[int] = []
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._static: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def padded_size(self, batch: ScheduledBatch) -> int | None:
        """The graph size that runs `batch`, or None if it runs eagerly."""
        if not self._sizes or batch.num_decodes != len(batch) or len(batch) > self._sizes[-1]:
            return None
        return self._sizes[bisect_left(self._sizes, len(batch))]

    def capture(
        self,
        model: LlamaForCausalLM,
        block_table: BlockTable,
        device: torch.device,
        max_num_seqs: int,
        decode_splits: Callable[[int], int],
        kv_scales: torch.Tensor | None,
    ) -> None:
        """Capture every size. Before the first step the static inputs are padding rows (null slot,
        context length 1), so warm-up and capture touch only the null block."""
        sizes = sorted({b for b in GRAPH_BATCH_SIZES if b < max_num_seqs} | {min(max_num_seqs, 512)})
        largest = sizes[-1]
        null_block = block_table.null_block
        self._static = {
            "input_ids": torch.zeros(largest, dtype=torch.long, device=device),
            "positions": torch.zeros(largest, dtype=torch.long, device=device),
            "slot_mapping": torch.full(
                (largest,), null_block * block_table.block_size, dtype=torch.long, device=device
            ),
            "block_tables": torch.full(
                (largest, block_table.max_blocks_per_seq), null_block, dtype=torch.int32, device=device
            ),
            "seq_lens": torch.ones(largest, dtype=torch.int32, device=device),
            "query_start_loc": torch.arange(largest + 1, dtype=torch.int32, device=device),
        }
        static = self._static
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for size in reversed(sizes):
                meta = AttentionMetadata(
                    slot_mapping=static["slot_mapping"][:size],
                    block_tables=static["block_tables"][:size],
                    seq_lens=static["seq_lens"][:size],
                    query_start_loc=static["query_start_loc"][: size + 1],
                    num_decodes=size,
                    seq_lens_cpu=[],
                    query_lens_cpu=[],
                    block_size=block_table.block_size,
                    triton=True,
                    decode_splits=decode_splits(size),
                    kv_scales=kv_scales,
                )
                input_ids, positions = static["input_ids"][:size], static["positions"][:size]
                model(input_ids, positions, meta)  # compiles and warms up outside the capture
                torch.cuda.synchronize(device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    hidden = model(input_ids, positions, meta)
                self._graphs[size] = (graph, hidden)
        torch.cuda.synchronize(device)
        self._sizes = sizes

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        """Run the forward pass of padded decode inputs; returns the hidden states of the real rows."""
        size, num_seqs = inputs.num_rows, inputs.num_seqs
        static = self._static
        if inputs.token_source is not None:
            static["input_ids"][:num_seqs].copy_(inputs.token_source)
        else:
            assert inputs.input_ids is not None
            static["input_ids"][:size].copy_(inputs.input_ids, non_blocking=True)
        for name in _COPIED:
            static[name][:size].copy_(getattr(inputs, name), non_blocking=True)
        static["block_tables"][:size, : inputs.block_tables.shape[1]].copy_(
            inputs.block_tables, non_blocking=True
        )
        graph, hidden = self._graphs[size]
        graph.replay()
        return hidden[:num_seqs]
