"""CUDA graphs of verify steps, so that checking k proposals costs about what the decode step it replaces
costs (a graph replay) rather than an eager chunked forward pass.

A verify step of decodes with at most k proposals each has a fixed shape once every sequence's chunk is
padded to k + 1 tokens and the batch to a captured size: one `DecodeGraphs` of width k + 1 per k up to
`num_speculative_tokens`, for batches up to the size above which nothing is proposed. Padding tokens write
only the null block and their logits are never computed, so sampling sees exactly the eager step's rows.
Any batch of such short chunks qualifies: a draft model's catch-up on the tokens its target accepted
is one too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.cuda_graphs import DecodeGraphs
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.step_inputs import StepInputs
from tokenmill.models.llama import LlamaForCausalLM


class VerifyGraphs:
    def __init__(self, num_tokens: int, max_num_seqs: int, max_model_len: int) -> None:
        """Graphs for up to `num_tokens` proposals per sequence and `max_num_seqs` sequences."""
        self.by_width = {k + 1: DecodeGraphs(k + 1) for k in range(1, num_tokens + 1)}
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len

    def __len__(self) -> int:
        return sum(len(graphs) for graphs in self.by_width.values())

    def capture(
        self,
        model: LlamaForCausalLM,
        block_table: BlockTable,
        device: torch.device,
        pool: object,
        decode_splits: Callable[[int], int],
    ) -> None:
        """Capture every width and size into `pool` (the decode graphs'): one step replays at a time.
        `decode_splits(size)`: programs per token and KV head of the attention, the decode graph's of the
        same size, so that each verified token rounds as its decode step would."""
        for graphs in self.by_width.values():
            graphs.capture(model, block_table, device, self.max_num_seqs, decode_splits, pool)

    def plan(self, batch: ScheduledBatch) -> tuple[int, int] | None:
        """(rows, width) of the graph that runs `batch`, or None if it runs eagerly: a batch whose chunks
        (a decode and its proposals, or a draft model's catch-up) are all short enough for a captured
        width, and each of which has room for its padded chunk within max_model_len."""
        width = max(batch.num_new_tokens, default=0)
        graphs = self.by_width.get(width)
        rows = None if graphs is None else graphs.size_for(len(batch))
        if rows is None:
            return None
        last_position = self.max_model_len - width
        if any(seq.num_computed_tokens > last_position for seq in batch.seqs):
            return None
        return rows, width

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        """The hidden states of the real sequences' chunk tokens (padding included) of a planned step."""
        return self.by_width[inputs.width].replay(inputs)
