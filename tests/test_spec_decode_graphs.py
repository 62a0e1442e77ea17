"""Verify steps of speculative decoding in CUDA graphs: the padded inputs (each chunk padded to the
graph's width, the batch to its size), their copy into static buffers, which batches a graph may run,
and, end to end on CPU, greedy output identical to decoding without speculation when every verify step
'replays' by running the model on the static buffers with the metadata a capture bakes in."""

from __future__ import annotations

import pytest
import torch

from tests.test_spec_decode_engine import copy_heavy_prompts, generate, summary
from tests.test_step_inputs import NULL_SLOT, builder, make_seq, slots
from tokenmill.bench.replay_proposer import ReplayProposer
from tokenmill.engine.cuda_graphs import StaticInputs
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.step_inputs import StepInputs
from tokenmill.sampling_params import SamplingParams
from tokenmill.spec_decode.verify_graphs import VerifyGraphs


def verify_batch(seqs, proposals) -> ScheduledBatch:
    return ScheduledBatch(seqs, [1 + len(d) for d in proposals], sum(not d for d in proposals), proposals)


def test_verify_inputs_pad_each_chunk_to_the_width_and_the_batch_to_the_rows() -> None:
    first = make_seq(6, [1, 2], computed=5)  # last token 105 at position 5, two proposals
    second = make_seq(3, [3], computed=2)  # last token 102 at position 2, no proposal
    step = builder().build_inputs(verify_batch([first, second], [[7, 8], []]), num_rows=4, width=4)
    assert step.num_decodes == 0 and step.width == 4 and step.query_lens == [4] * 4
    assert step.input_ids.tolist() == [105, 7, 8, 0, 102, 0, 0, 0] + [0] * 8
    assert step.positions.tolist() == [5, 6, 7, 8, 2, 3, 4, 5] + [0, 1, 2, 3] * 2
    # real tokens in their blocks; padding (in a chunk or a row) only in the null block
    chunks = slots((2, range(1, 4))) + [NULL_SLOT] + slots((3, [2])) + [NULL_SLOT] * 3
    assert step.slot_mapping.tolist() == chunks + [NULL_SLOT + offset for offset in range(4)] * 2
    assert step.seq_lens.tolist() == [9, 6, 4, 4]  # the kernels read the cached part as seq_len - width
    assert step.query_start_loc.tolist() == [0, 4, 8, 12, 16]
    assert step.logits_indices.tolist() == [0, 1, 2, 4]  # the proposals' rows and each last token's
    assert step.sampling_seqs == [first, second] and step.proposals == [[7, 8], []]


def test_static_buffers_take_a_verify_step() -> None:
    inputs = builder()
    static = StaticInputs(4, inputs.block_table, torch.device("cpu"), width=3)
    seq = make_seq(6, [1, 2], computed=5)
    static.load(inputs.build_inputs(verify_batch([seq], [[7, 8]]), num_rows=2, width=3))
    assert static.input_ids.tolist() == [105, 7, 8] + [0] * 9
    assert static.positions.tolist() == [5, 6, 7, 0, 1, 2] + [0] * 6
    assert static.seq_lens.tolist() == [8, 3, 3, 3]
    assert static.query_start_loc.tolist() == [0, 3, 6, 9, 12]
    meta = static.metadata(2, 1)
    assert meta.num_decodes == 0 and meta.max_query_len == 3 and len(meta.slot_mapping) == 6


class StaticReplay:
    """Stands in for one width's captured graphs on CPU: pads like them and 'replays' by running the
    model eagerly on the static buffers with the capture's metadata (device tensors only), so the
    Triton kernels (interpreted) see exactly what a graph replay gives them."""

    def __init__(self, runner, width: int, sizes: list[int]) -> None:
        self.runner, self.width, self.sizes = runner, width, sizes
        self.static = StaticInputs(sizes[-1], runner.inputs.block_table, torch.device("cpu"), width)
        self.replays = 0

    def __len__(self) -> int:
        return len(self.sizes)

    def size_for(self, num_seqs: int) -> int | None:
        return next((size for size in self.sizes if size >= num_seqs), None)

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        self.replays += 1
        self.static.load(inputs)
        tokens = inputs.num_rows * self.width
        meta = self.static.metadata(inputs.num_rows, 2)  # every token attended as a decode split in two
        hidden = self.runner.model(self.static.input_ids[:tokens], self.static.positions[:tokens], meta)
        return hidden[: inputs.num_seqs * self.width]


def test_only_batches_of_short_chunks_with_room_run_in_a_verify_graph() -> None:
    graphs = VerifyGraphs(num_tokens=3, max_num_seqs=2, max_model_len=24)
    graphs.by_width = {w: StaticReplay.__new__(StaticReplay) for w in (2, 3, 4)}
    for width, replay in graphs.by_width.items():
        replay.sizes, replay.width = [1, 2], width
    near_end = make_seq(20, [1, 2, 3, 4, 5], computed=19)
    assert graphs.plan(verify_batch([near_end], [[7, 8]])) == (1, 3)
    assert graphs.plan(verify_batch([near_end, make_seq(3, [6], 2)], [[7, 8, 9], []])) == (2, 4)
    assert graphs.plan(verify_batch([near_end], [[7, 8, 9, 10]])) is None  # wider than k = 3
    three = [make_seq(3, [b], 2) for b in (6, 7, 8)]
    assert graphs.plan(verify_batch(three, [[1], [], []])) is None  # more sequences than graphed
    # one proposal fits before max_model_len (positions 21, 22), a chunk padded to 4 would not
    last = make_seq(22, [1] * 6, 21)
    assert graphs.plan(verify_batch([last], [[7]])) == (1, 2)
    assert graphs.plan(verify_batch([last, make_seq(3, [6], 2)], [[7], [7, 8, 9]])) is None
    assert graphs.plan(ScheduledBatch([near_end, make_seq(5, [9], 0)], [3, 5], 0, [[7, 8], []])) is None
    short_prefill = ScheduledBatch([near_end, make_seq(4, [9], 0)], [3, 4], 0, [[7, 8], []])
    assert graphs.plan(short_prefill) == (2, 4)  # a short chunk is a chunk like any other
    assert graphs.plan(ScheduledBatch([near_end], [1], 1)) is None  # decodes: the decode graphs'


@pytest.mark.slow
def test_graph_replayed_verify_steps_are_token_exact(tiny_model_dir) -> None:
    """Greedy output through verify steps replayed from static buffers (Triton kernels, interpreted)
    equals plain decoding; proposals are the reference's own tokens, 40% of them wrong."""
    model = tiny_model_dir("qwen3")
    prompts = copy_heavy_prompts()[:3]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain, _ = generate(model, prompts, params, kernels="triton")
    references = [o.prompt_token_ids + o.outputs[0].token_ids for o in plain]

    def install(engine) -> None:
        runner = engine.runner
        runner.verify_graphs.by_width = {w: StaticReplay(runner, w, [1, 2, 4]) for w in (2, 3, 4, 5)}

    proposer = ReplayProposer(references, acceptance=0.6, vocab_size=320)
    spec, engine = generate(
        model, prompts, params, "ngram", proposer, kernels="triton", before_generate=install
    )
    assert summary(spec) == summary(plain)
    assert sum(replay.replays for replay in engine.runner.verify_graphs.by_width.values()) > 0
    assert 0 < engine.stats.spec_accepted_tokens < engine.stats.spec_proposed_tokens
