"""CUDA graphs of the model's forward pass over pure-decode batches.

One graph per size in GRAPH_BATCH_SIZES up to `max_num_seqs` (at most 512), captured largest first into
one shared memory pool. A decode batch replays the graph of the next size up, its inputs padded to that
size by the input builder. Every graph reads the same static buffers, so replaying is a few copies
into them and one launch; the copies are tested on CPU.

A `DecodeGraphs` of `width` > 1 holds the same graphs for verify steps of speculative decoding: every
row is `width` query tokens (the last known token and up to `width - 1` proposals, padded), each attended
as a decode (`AttentionMetadata.attends_as_decodes`), whose launch depends only on the batch's shape.
One of `verifies` False holds a single row of one prompt chunk padded to `width` tokens, attended by the
prefill kernel (`prefill_graphs`).

How many graphs a process instantiates changes how fast every one of them runs: the CUDA driver
(580.159, CUDA 13.0; H100 and H200) starts a graph's next kernel about 0.06 µs after the last one ends
while the process has instantiated at most FAST_CHAINED_EXECS graph executables, and about 0.42 µs after
it from the next instantiation on, in every graph, for the rest of the process, whether or not the
others are destroyed again. A Qwen3-8B decode step of 254 kernels replays 3.4% slower (2,599 -> 2,688 µs,
bench/results/s23-graph-execs/). So a configuration that fits in that many graphs captures no more,
counting those an earlier engine of the same process made (`DecodeGraphs.made_in_process`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import ClassVar

import torch

from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.step_inputs import StepInputs
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.models.llama import LlamaForCausalLM

GRAPH_BATCH_SIZES = (1, 2, 4, 8, *range(16, 513, 16))
FAST_CHAINED_EXECS = 3


def graph_sizes(max_num_seqs: int) -> list[int]:
    """The batch sizes captured for up to `max_num_seqs` rows."""
    return sorted({b for b in GRAPH_BATCH_SIZES if b < max_num_seqs} | {min(max_num_seqs, 512)})


class StaticInputs:
    """The input buffers every graph of one width reads. They start as padding rows (token 0 at position
    0, the null block's first slots, context length `width`), so warm-up and capture touch only the null
    block."""

    def __init__(
        self,
        largest: int,
        block_table: BlockTable,
        device: torch.device,
        width: int = 1,
        verifies: bool | None = None,
    ) -> None:
        """`verifies` (default: `width` > 1): rows of several tokens are verify chunks, attended as
        decodes; else prompt chunks, attended by the prefill kernel."""
        null_block, block_size = block_table.null_block, block_table.block_size
        tokens = largest * width
        self.width = width
        self.verifies = width > 1 if verifies is None else verifies
        self.input_ids = torch.zeros(tokens, dtype=torch.long, device=device)
        self.positions = torch.zeros(tokens, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((tokens,), null_block * block_size, dtype=torch.long, device=device)
        self.seq_lens = torch.full((largest,), width, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(0, tokens + 1, width, dtype=torch.int32, device=device)
        shape = (largest, block_table.max_blocks_per_seq)
        self.block_tables = torch.full(shape, null_block, dtype=torch.int32, device=device)
        self.block_size = block_size

    def load(self, inputs: StepInputs) -> None:
        """Copy a step's decode (or verify) inputs, padded to a graph size, into the buffers."""
        assert inputs.width == self.width, "a step replays a graph of its own width"
        size, tokens = inputs.num_rows, len(inputs.positions)
        if inputs.token_source is not None:
            self.input_ids[: inputs.num_seqs].copy_(inputs.token_source)
        else:
            assert inputs.input_ids is not None
            self.input_ids[:tokens].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:tokens].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:tokens].copy_(inputs.slot_mapping, non_blocking=True)
        self.seq_lens[:size].copy_(inputs.seq_lens, non_blocking=True)
        width = inputs.block_tables.shape[1]
        self.block_tables[:size, :width].copy_(inputs.block_tables, non_blocking=True)

    def metadata(self, size: int, decode_splits: int) -> AttentionMetadata:
        """Attention metadata over the first `size` rows, for capture (so it holds no host lists)."""
        width = self.width
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[: size * width],
            block_tables=self.block_tables[:size],
            seq_lens=self.seq_lens[:size],
            query_start_loc=self.query_start_loc[: size + 1],
            num_decodes=size if width == 1 else 0,
            seq_lens_cpu=[],
            query_lens_cpu=[],
            block_size=self.block_size,
            max_query_len=width,
            decode_splits=decode_splits,
            verifies=self.verifies,
        )


class DecodeGraphs:
    made_in_process: ClassVar[int] = 0  # graphs instantiated by every engine of this process so far

    def __init__(self, width: int = 1, verifies: bool | None = None) -> None:
        """`width`: query tokens per row (1: decode steps; k + 1: verify steps of k proposals; a prompt
        chunk's padded length with `verifies` False)."""
        self.width = width
        self.verifies = width > 1 if verifies is None else verifies
        self._sizes: list[int] = []
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._static: StaticInputs | None = None
        self.pool: object | None = None  # the memory pool of the captured graphs

    def __len__(self) -> int:
        return len(self._graphs)

    def padded_size(self, batch: ScheduledBatch) -> int | None:
        """The graph size that runs `batch`, or None if it runs eagerly."""
        return self.size_for(len(batch)) if batch.num_decodes == len(batch) else None

    def size_for(self, num_seqs: int) -> int | None:
        """The smallest captured size of at least `num_seqs` rows, or None."""
        if not self._sizes or num_seqs > self._sizes[-1]:
            return None
        return self._sizes[bisect_left(self._sizes, num_seqs)]

    def capture(
        self,
        model: LlamaForCausalLM,
        block_table: BlockTable,
        device: torch.device,
        max_num_seqs: int,
        decode_splits: Callable[[int], int],
        pool: object | None = None,
    ) -> None:
        """Capture every size, largest first (later, smaller graphs reuse the pool's memory); `pool`
        is another set of graphs' `pool` to share (one step replays at a time)."""
        sizes = graph_sizes(max_num_seqs)
        static = self._static = StaticInputs(sizes[-1], block_table, device, self.width, self.verifies)
        pool = self.pool = pool or torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for size in reversed(sizes):
                meta = static.metadata(size, decode_splits(size))
                tokens = size * self.width
                input_ids, positions = static.input_ids[:tokens], static.positions[:tokens]
                model(input_ids, positions, meta)  # compiles and warms up outside the capture
                torch.cuda.synchronize(device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    hidden = model(input_ids, positions, meta)
                self._graphs[size] = (graph, hidden)
                DecodeGraphs.made_in_process += 1
            for graph, hidden in self._graphs.values():  # a first replay uploads the graph: not in a request
                graph.replay()
                model.warm_up_logits(hidden)  # nor the first compile of a small batch's LM head
        torch.cuda.synchronize(device)
        self._sizes = sizes

    def release(self) -> None:
        """Destroy every graph; later decode steps run eagerly. A process group whose NCCL collectives are
        captured in a live graph cannot be destroyed (its `ncclCommDestroy` waits for ever), so a
        tensor-parallel engine releases its graphs before leaving the group."""
        self._graphs.clear()
        self._sizes = []
        self._static = None

    def replay_as_is(self, size: int) -> None:
        """Replay the graph of `size` rows on whatever its buffers hold (for timing the layers alone)."""
        self._graphs[size][0].replay()

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        """Run the forward pass of padded inputs; returns the hidden states of the real rows' tokens."""
        assert self._static is not None, "graphs are captured before the first step"
        self._static.load(inputs)
        graph, hidden = self._graphs[inputs.num_rows]
        graph.replay()
        return hidden[: inputs.num_seqs * self.width]


class GraphsByWidth:
    """`DecodeGraphs` of several row widths (the verify graphs, the prefill graphs), captured into one
    pool and replayed by a step's width; subclasses say which batches they take (`plan`)."""

    def __init__(self, by_width: dict[int, DecodeGraphs], max_num_seqs: int) -> None:
        self.by_width = by_width
        self.max_num_seqs = max_num_seqs

    def __len__(self) -> int:
        return sum(len(graphs) for graphs in self.by_width.values())

    def planned(self) -> int:
        """How many graphs `capture` will instantiate."""
        return len(self.by_width) * len(graph_sizes(self.max_num_seqs))

    def capture(
        self,
        model: LlamaForCausalLM,
        block_table: BlockTable,
        device: torch.device,
        pool: object,
        decode_splits: Callable[[int], int],
    ) -> None:
        """Capture every width and size into `pool` (the decode graphs': one step replays at a time).
        `decode_splits(size)`: programs per token and KV head of a decode-kernel attention, the decode
        graph's of the same size."""
        for graphs in self.by_width.values():
            graphs.capture(model, block_table, device, self.max_num_seqs, decode_splits, pool)

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        """The hidden states of a planned step's rows, padding tokens included."""
        return self.by_width[inputs.width].replay(inputs)
