"""One sequence's prompt chunk in a CUDA graph (`prefill_graphs`): which steps a graph may run, the chunk
padded to the graph's width, the static buffers' metadata (the prefill kernel, not per-token decodes),
and, end to end on CPU, greedy output identical to the eager engine's when every such step 'replays' by
running the model on the static buffers with the metadata a capture bakes in."""

from __future__ import annotations

import pytest
import torch

from tests.test_spec_decode_engine import generate, summary
from tests.test_step_inputs import BLOCK_SIZE, NULL, NULL_SLOT, make_seq, slots
from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.cuda_graphs import FAST_CHAINED_EXECS, StaticInputs, graph_sizes
from tokenmill.engine.prefill_graphs import PREFILL_GRAPH_WIDTHS, PrefillGraphs
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.step_inputs import InputBuilder, StepInputs
from tokenmill.kernels.metadata import MAX_VERIFY_WIDTH
from tokenmill.sampling_params import SamplingParams
from tokenmill.spec_decode.verify_graphs import VerifyGraphs


def builder() -> InputBuilder:
    return InputBuilder(BlockTable(BLOCK_SIZE, 2, 16, NULL), torch.device("cpu"))


def chunk(seq, tokens: int) -> ScheduledBatch:
    return ScheduledBatch([seq], [tokens], 0)


class StaticPrefill:
    """Stands in for one width's captured prefill graph on CPU: pads like it and 'replays' by running the
    model eagerly on the static buffers with the capture's metadata."""

    def __init__(self, runner, width: int, captured: bool = True) -> None:
        self.runner, self.width, self.replays = runner, width, 0
        block_table = runner.inputs.block_table if runner is not None else builder().block_table
        self.static = StaticInputs(1, block_table, torch.device("cpu"), width, verifies=False)
        self.captured = captured

    def size_for(self, num_seqs: int) -> int | None:
        return 1 if self.captured and num_seqs == 1 else None

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        self.replays += 1
        self.static.load(inputs)
        meta = self.static.metadata(1, 1)
        return self.runner.model(self.static.input_ids, self.static.positions, meta)


def test_the_widths_lie_above_every_verify_chunk_and_within_the_limits() -> None:
    assert min(PREFILL_GRAPH_WIDTHS) > MAX_VERIFY_WIDTH
    many = FAST_CHAINED_EXECS + 1  # other graphs past the limit already: every width that fits
    assert list(PrefillGraphs(100, 8192, other_graphs=many).by_width) == [32, 64]
    assert list(PrefillGraphs(4096, 256, other_graphs=many).by_width) == [32, 64, 128, 256]
    assert list(PrefillGraphs(4096, 8192, other_graphs=many).by_width) == list(PREFILL_GRAPH_WIDTHS)


@pytest.mark.parametrize(
    ("max_num_seqs", "decode_graphs", "widths"),
    [(1, 1, [32, 128]), (2, 2, [128]), (4, 3, []), (8, 4, list(PREFILL_GRAPH_WIDTHS))],
)
def test_the_widths_keep_the_graphs_count_within_fast_chaining(
    max_num_seqs: int, decode_graphs: int, widths: list[int]
) -> None:
    assert len(graph_sizes(max_num_seqs)) == decode_graphs
    graphs = PrefillGraphs(4096, 8192, other_graphs=decode_graphs)
    assert list(graphs.by_width) == widths
    assert decode_graphs + len(widths) <= FAST_CHAINED_EXECS or decode_graphs > FAST_CHAINED_EXECS
    assert list(PrefillGraphs(100, 8192, other_graphs=1).by_width) == [32, 64]  # both fit the room
    assert list(PrefillGraphs(100, 8192, other_graphs=2).by_width) == [32]  # 128 is past max_model_len


def test_verify_graphs_count_every_width_and_batch_size() -> None:
    assert graph_sizes(8) == [1, 2, 4, 8]
    assert graph_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert VerifyGraphs(num_tokens=2, max_num_seqs=8, max_model_len=512).planned() == 2 * 4


def test_only_one_sequences_chunk_with_room_runs_in_a_prefill_graph() -> None:
    graphs = PrefillGraphs(max_model_len=80, max_num_batched_tokens=8192, other_graphs=1)
    graphs.by_width = {32: StaticPrefill(None, 32), 64: StaticPrefill(None, 64)}
    prompt = make_seq(40, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], computed=0)
    assert graphs.plan(chunk(prompt, 2)) == (1, 32)
    assert graphs.plan(chunk(prompt, 32)) == (1, 32)
    assert graphs.plan(chunk(prompt, 33)) == (1, 64)
    assert graphs.plan(chunk(prompt, 65)) is None  # wider than the widest graph
    cached = make_seq(40, list(range(10)), computed=24)  # a cached prefix: 16 new tokens at 24..39
    assert graphs.plan(chunk(cached, 16)) == (1, 32)
    near_end = make_seq(60, list(range(15)), computed=50)  # padded to 32 it would pass max_model_len 80
    assert graphs.plan(chunk(near_end, 10)) is None
    two = ScheduledBatch([prompt, make_seq(8, [11, 12], 0)], [8, 8], 0)
    assert graphs.plan(two) is None
    decode_and_chunk = ScheduledBatch([make_seq(5, [13, 14], 4), prompt], [1, 8], 1)
    assert graphs.plan(decode_and_chunk) is None
    assert graphs.plan(ScheduledBatch([prompt], [3], 0, [[7, 8]])) is None  # a verify chunk
    graphs.by_width[32].captured = False  # an eager engine captures none
    assert graphs.plan(chunk(prompt, 20)) == (1, 64)


def test_a_chunk_pads_to_the_width_after_its_real_tokens() -> None:
    seq = make_seq(14, [7, 2, 5, 9], computed=4)  # ten new tokens at positions 4..13
    step = builder().build_inputs(chunk(seq, 10), num_rows=1, width=32)
    assert step.num_decodes == 0 and step.width == 32 and step.query_lens == [32]
    assert step.input_ids.tolist() == list(range(104, 114)) + [0] * 22
    assert step.positions.tolist() == list(range(4, 36))
    real = slots((2, range(4)), (5, range(4)), (9, range(2)))
    assert step.slot_mapping.tolist() == real + [NULL_SLOT] * 22
    assert step.seq_lens.tolist() == [36]  # the kernels read the cached part as seq_len - width
    assert step.query_start_loc.tolist() == [0, 32]
    assert step.logits_indices.tolist() == [9]  # the last real token
    assert step.sampling_seqs == [seq]


def test_the_static_buffers_attend_a_prompt_chunk_with_the_prefill_kernel() -> None:
    meta = StaticInputs(1, builder().block_table, torch.device("cpu"), 32, verifies=False).metadata(1, 1)
    assert meta.max_query_len == 32 and meta.num_decodes == 0 and not meta.verifies
    assert not meta.attends_as_decodes


@pytest.mark.slow
def test_graph_replayed_prefills_are_token_exact(tiny_model_dir) -> None:
    """Greedy output with every single-sequence prompt chunk replayed from padded static buffers
    (Triton kernels, interpreted) equals the eager engine's: fresh prompts, a prompt sharing a cached
    prefix, and a prompt longer than one chunk (its chunks of 16 tokens replay at width 32)."""
    model = tiny_model_dir("qwen3")
    prompts = [list(range(5, 45)), [*range(5, 30), 7, 9, 11], list(range(60, 63))]
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    engine_args = dict(kernels="triton", max_num_seqs=1, max_num_batched_tokens=16, max_model_len=96)
    eager, _ = generate(model, prompts, params, **engine_args)

    def install(engine) -> None:
        runner = engine.runner
        runner.prefill_graphs = PrefillGraphs(96, 16 * 4, other_graphs=FAST_CHAINED_EXECS + 1)
        runner.prefill_graphs.by_width = {w: StaticPrefill(runner, w) for w in (32, 64)}

    graphed, engine = generate(model, prompts, params, before_generate=install, **engine_args)
    assert summary(graphed) == summary(eager)
    assert sum(replay.replays for replay in engine.runner.prefill_graphs.by_width.values()) >= 4
