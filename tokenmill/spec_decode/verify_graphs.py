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

from tokenmill.engine.cuda_graphs import DecodeGraphs, GraphsByWidth
from tokenmill.engine.scheduler import ScheduledBatch


class VerifyGraphs(GraphsByWidth):
    def __init__(self, num_tokens: int, max_num_seqs: int, max_model_len: int) -> None:
        """Graphs for up to `num_tokens` proposals per sequence and `max_num_seqs` sequences. Their
        verified tokens attend as decodes, with the decode graph's split count of the same size, so
        that each rounds as its decode step would."""
        super().__init__({k + 1: DecodeGraphs(k + 1) for k in range(1, num_tokens + 1)}, max_num_seqs)
        self.max_model_len = max_model_len

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
