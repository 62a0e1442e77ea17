"""CUDA graphs of one sequence's prompt chunk, so that a lone request's prefill costs its kernels' time
rather than the host's.

Run eagerly, the prefill of one 128-token prompt of Qwen3-8B launches about 400 kernels, and launching
them takes the host 11-41 ms (H100 and H200, bf16, fp8 and AWQ) while the GPU would need a few: the GPU
waits on the host (`bench/step_times.py`). A step whose batch is one sequence's chunk of T new tokens
(2 <= T <= the widest width) instead replays the graph of the next width up in PREFILL_GRAPH_WIDTHS,
its chunk padded as a verify chunk is (`step_inputs`): the padding tokens follow the real ones, so
causal attention keeps them out of every real token's output; they write only the null block and are
never sampled. The widths start above MAX_VERIFY_WIDTH, so a step's width alone says whether a verify or
a prefill graph runs it, on a tensor-parallel worker too. Batches of several sequences, or of decodes
and a chunk, run eagerly, as do chunks wider than the widest graph.

Graphs beyond the first FAST_CHAINED_EXECS of a process slow every graph's kernel chaining
(`cuda_graphs`), which would cost a long generation more than its prompt's graph saves (3.4% of each
Qwen3-8B decode step against ~10 ms once). So while the decode and verify graphs leave room under that
limit, only the widths of LIMITED_WIDTHS that fit are captured (one engine of one sequence: 128, then
32, for short prompts and for the few new tokens of a prefix-cached turn); once they are past it
already, every width is.
"""

from __future__ import annotations

from tokenmill.engine.cuda_graphs import FAST_CHAINED_EXECS, DecodeGraphs, GraphsByWidth
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.kernels.metadata import MAX_VERIFY_WIDTH

PREFILL_GRAPH_WIDTHS = (32, 64, 128, 256, 512)
LIMITED_WIDTHS = (128, 32)  # the widths kept, in this order, while the graphs' count is limited
assert min(PREFILL_GRAPH_WIDTHS) > MAX_VERIFY_WIDTH, "a step's width tells prefill and verify graphs apart"


class PrefillGraphs(GraphsByWidth):
    def __init__(self, max_model_len: int, max_num_batched_tokens: int, other_graphs: int) -> None:
        """One row of each width that fits both a step's token budget and a sequence, limited as the
        module says by the `other_graphs` of the process (this engine's decode and verify graphs, and
        any an earlier engine made)."""
        limit = min(max_model_len, max_num_batched_tokens)
        widths = [w for w in PREFILL_GRAPH_WIDTHS if w <= limit]
        room = FAST_CHAINED_EXECS - other_graphs
        if 0 <= room < len(widths):
            widths = sorted([w for w in LIMITED_WIDTHS if w in widths][:room])
        super().__init__({w: DecodeGraphs(w, verifies=False) for w in widths}, 1)
        self.max_model_len = max_model_len

    def plan(self, batch: ScheduledBatch) -> tuple[int, int] | None:
        """(rows, width) of the graph that runs `batch`, or None if it runs eagerly: one sequence's chunk
        of at least two tokens, no proposals, narrow enough for a captured width (none is captured when
        the engine runs eagerly), and room for its padded chunk within max_model_len (the padding's
        positions index the rotary tables)."""
        if len(batch) != 1 or batch.num_decodes or batch.proposals:
            return None
        tokens = batch.num_new_tokens[0]
        captured = (w for w, graphs in self.by_width.items() if graphs.size_for(1) is not None)
        width = next((w for w in captured if w >= tokens), None)
        if width is None or batch.seqs[0].num_computed_tokens + width > self.max_model_len:
            return None
        return 1, width
