"""The input builder, with fake sequences and no model: exact positions, slots, block-table rows and
CUDA-graph padding for every kind of step, and the copy of graph inputs into their static buffers."""

from __future__ import annotations

import numpy as np
import torch

from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.cuda_graphs import StaticInputs
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.engine.step_inputs import InputBuilder, StepInputs
from tokenmill.sampling_params import SamplingParams

BLOCK_SIZE = 4
NULL = 50  # the null block: the cache has blocks 0..49 and this spare one
NULL_SLOT = NULL * BLOCK_SIZE


def make_seq(num_tokens: int, blocks: list[int], computed: int) -> Sequence:
    """A sequence of tokens 100, 101, ... holding `blocks`, with `computed` tokens already in the cache."""
    seq = Sequence("r", 0, list(range(100, 100 + num_tokens)), SamplingParams(), torch.device("cpu"))
    seq.block_ids = list(blocks)
    seq.num_computed_tokens = computed
    return seq


def builder(max_num_seqs: int = 8) -> InputBuilder:
    table = BlockTable(BLOCK_SIZE, max_num_seqs, 6, NULL)
    return InputBuilder(table, torch.device("cpu"))


def build(
    inputs: InputBuilder, seqs: list[Sequence], num_new: list[int], num_rows: int | None = None
) -> StepInputs:
    batch = ScheduledBatch(seqs, num_new, sum(1 for n in num_new if n == 1))
    return inputs.build_inputs(batch, num_rows=num_rows)


def slots(*pairs: tuple[int, range]) -> list[int]:
    """Expected slots: for each (block, offsets), block * BLOCK_SIZE + offset."""
    return [block * BLOCK_SIZE + offset for block, offsets in pairs for offset in offsets]


def test_prefill_whose_length_the_block_size_does_not_divide() -> None:
    seq = make_seq(10, [7, 2, 5], computed=0)
    step = build(builder(), [seq], [10])
    assert step.input_ids.tolist() == list(range(100, 110))
    assert step.positions.tolist() == list(range(10))
    assert step.slot_mapping.tolist() == slots((7, range(4)), (2, range(4)), (5, range(2)))
    assert step.block_tables.tolist() == [[7, 2, 5]]
    assert step.seq_lens.tolist() == [10]
    assert step.query_start_loc.tolist() == [0, 10]
    assert step.logits_indices.tolist() == [9]
    assert step.sampling_seqs == [seq]
    assert step.num_decodes == 0


def test_prefix_cache_hit_computes_only_the_rest() -> None:
    seq = make_seq(10, [7, 2, 5], computed=8)  # two full blocks came from the prefix cache
    step = build(builder(), [seq], [2])
    assert step.input_ids.tolist() == [108, 109]
    assert step.positions.tolist() == [8, 9]
    assert step.slot_mapping.tolist() == slots((5, range(2)))
    assert step.seq_lens.tolist() == [10]
    assert step.logits_indices.tolist() == [1]


def test_chunked_prefill_samples_only_after_the_last_chunk() -> None:
    inputs = builder()
    seq = make_seq(11, [3, 1, 8], computed=0)
    first = build(inputs, [seq], [6])
    assert first.positions.tolist() == list(range(6))
    assert first.slot_mapping.tolist() == slots((3, range(4)), (1, range(2)))
    assert first.seq_lens.tolist() == [6]
    assert first.logits_indices.tolist() == [] and first.sampling_seqs == []
    seq.num_computed_tokens = 6
    second = build(inputs, [seq], [5])
    assert second.input_ids.tolist() == list(range(106, 111))
    assert second.positions.tolist() == list(range(6, 11))
    assert second.slot_mapping.tolist() == slots((1, range(2, 4)), (8, range(3)))
    assert second.logits_indices.tolist() == [4] and second.sampling_seqs == [seq]


def test_mixed_step_decodes_first_and_rows_padded_with_the_null_block() -> None:
    decode = make_seq(9, [4, 6, 11], computed=8)  # its 9th token sits at offset 0 of its third block
    chunk = make_seq(7, [9, 10], computed=4)  # mid-prompt: a prefix hit, then 3 new tokens
    prefill = make_seq(3, [12], computed=0)
    step = build(builder(), [decode, chunk, prefill], [1, 3, 3])
    assert step.num_decodes == 1
    assert step.input_ids.tolist() == [108, 104, 105, 106, 100, 101, 102]
    assert step.positions.tolist() == [8, 4, 5, 6, 0, 1, 2]
    assert step.slot_mapping.tolist() == slots((11, [0]), (10, range(3)), (12, range(3)))
    assert step.block_tables.tolist() == [[4, 6, 11], [9, 10, NULL], [12, NULL, NULL]]
    assert step.seq_lens.tolist() == [9, 7, 3]
    assert step.query_start_loc.tolist() == [0, 1, 4, 7]
    assert step.logits_indices.tolist() == [0, 3, 6]
    assert step.sampling_seqs == [decode, chunk, prefill]


def test_graph_padding_rows_touch_only_the_null_block() -> None:
    seqs = [make_seq(6, [1, 2], computed=5), make_seq(3, [3], computed=2), make_seq(13, [4, 5, 6, 7], 12)]
    step = build(builder(), seqs, [1, 1, 1], num_rows=8)
    assert step.num_seqs == 3 and step.num_rows == 8 and step.num_decodes == 8
    assert step.input_ids.tolist() == [105, 102, 112] + [0] * 5
    assert step.positions.tolist() == [5, 2, 12] + [0] * 5
    assert step.slot_mapping.tolist() == [2 * 4 + 1, 3 * 4 + 2, 7 * 4 + 0] + [NULL_SLOT] * 5
    assert step.seq_lens.tolist() == [6, 3, 13] + [1] * 5
    assert step.query_start_loc.tolist() == list(range(9))
    assert (
        step.block_tables.tolist()
        == [[1, 2, NULL, NULL], [3, NULL, NULL, NULL], [4, 5, 6, 7]] + [[NULL] * 4] * 5
    )
    assert step.logits_indices.tolist() == [0, 1, 2]
    assert step.sampling_seqs == seqs


def test_a_one_token_prompt_chunk_in_a_decode_batch_is_not_sampled() -> None:
    decode = make_seq(5, [1, 2], computed=4)
    chunk = make_seq(9, [3, 4, 5], computed=4)  # the budget left room for one of its 5 new tokens
    step = build(builder(), [decode, chunk], [1, 1], num_rows=2)
    assert step.positions.tolist() == [4, 4]
    assert step.slot_mapping.tolist() == [2 * 4, 4 * 4]
    assert step.logits_indices.tolist() == [0] and step.sampling_seqs == [decode]


def test_continuation_takes_its_tokens_from_the_device() -> None:
    seq = make_seq(6, [1, 2], computed=6)  # its 7th token was sampled on the device, not yet seen here
    sampled = torch.tensor([42])
    step = builder().build_inputs(ScheduledBatch([seq], [1], 1), token_source=sampled)
    assert step.input_ids is None and step.token_source is sampled
    assert step.positions.tolist() == [6] and step.slot_mapping.tolist() == [2 * 4 + 2]
    assert step.seq_lens.tolist() == [7] and step.sampling_seqs == [seq]


def test_rows_change_only_when_their_sequence_or_its_blocks_do() -> None:
    inputs = builder()
    table = inputs.block_table
    first, second = make_seq(6, [1, 2], computed=5), make_seq(4, [3], computed=3)
    build(inputs, [first, second], [1, 1])
    table.host_table[1, 0] = 33  # a scribble survives as long as its row is not written again
    step = build(inputs, [first, second], [1, 1])
    assert step.block_tables.tolist() == [[1, 2], [33, NULL]]
    first.block_ids.append(9)
    table.host_table[0, 0] = 44
    step = build(inputs, [first, second], [1, 1])  # only the appended entry is written
    assert step.block_tables.tolist() == [[44, 2, 9], [33, NULL, NULL]]


def test_a_row_taken_by_another_sequence_or_reallocated_is_rewritten() -> None:
    inputs = builder()
    table = inputs.block_table
    long, short = make_seq(12, [1, 2, 3], computed=11), make_seq(4, [4], computed=3)
    build(inputs, [long], [1])
    step = build(inputs, [short], [1])  # row 0 now holds a shorter sequence: its old tail is cleared
    assert table.host_table[0].tolist() == [4] + [NULL] * 5
    assert step.block_tables.tolist() == [[4]]
    short.block_ids, short.block_generation = [8], short.block_generation + 1  # freed and recomputed
    step = build(inputs, [short], [1])
    assert step.block_tables.tolist() == [[8]] and step.slot_mapping.tolist() == [8 * 4 + 3]
    step = build(inputs, [long, short], [1, 1], num_rows=4)
    assert table.host_table[:4].tolist() == [[1, 2, 3] + [NULL] * 3, [8] + [NULL] * 5] + [[NULL] * 6] * 2


def test_the_rows_are_as_wide_as_the_widest_sequence_still_in_the_step() -> None:
    inputs = builder()
    short, long = make_seq(4, [4], computed=3), make_seq(12, [1, 2, 3], computed=11)
    assert build(inputs, [short, long], [1, 1]).block_tables.shape == (2, 3)
    assert build(inputs, [short], [1]).block_tables.tolist() == [[4]]  # the wide row left
    assert build(inputs, [short], [1], num_rows=3).block_tables.tolist() == [[4], [NULL], [NULL]]


def test_a_step_never_overwrites_the_previous_steps_host_arrays() -> None:
    """With async scheduling the previous step's uploads may still be queued while the next is built."""
    inputs = builder()
    seq = make_seq(10, [7, 2, 5], computed=0)
    first = build(inputs, [seq], [10])
    other = make_seq(3, [1], computed=0)
    build(inputs, [other], [3])
    assert first.positions.tolist() == list(range(10))
    assert first.slot_mapping.tolist() == slots((7, range(4)), (2, range(4)), (5, range(2)))
    assert first.input_ids.tolist() == list(range(100, 110))


def test_graph_steps_overwrite_the_static_rows_they_use() -> None:
    inputs = builder()
    static = StaticInputs(8, inputs.block_table, torch.device("cpu"))
    static.load(build(inputs, [make_seq(13, [4, 5, 6, 7], computed=12)], [1], num_rows=4))
    first, second = make_seq(6, [1, 2], computed=5), make_seq(3, [3], computed=2)
    static.load(build(inputs, [first, second], [1, 1], num_rows=2))
    assert static.input_ids.tolist() == [105, 102] + [0] * 6
    assert static.positions.tolist() == [5, 2] + [0] * 6
    assert static.slot_mapping.tolist() == [2 * 4 + 1, 3 * 4 + 2] + [NULL_SLOT] * 6
    assert static.seq_lens.tolist() == [6, 3] + [1] * 6
    assert static.query_start_loc.tolist() == list(range(9))
    # columns past this step's widest row keep an older step's blocks; context lengths keep them unread
    assert static.block_tables.tolist() == [[1, 2, 6, 7, NULL, NULL], [3] + [NULL] * 5] + [[NULL] * 6] * 6
    continuation = ScheduledBatch([first, second], [1, 1], 2)
    static.load(inputs.build_inputs(continuation, token_source=torch.tensor([77, 88]), num_rows=2))
    assert static.input_ids.tolist() == [77, 88] + [0] * 6


def test_host_staging_stays_on_the_host_under_another_default_device() -> None:
    """A caller inside `with torch.device("cuda")` once made the staging arrays device tensors (and on a
    GPU, a pin request on them an error); `meta` shows the same on the CPU."""
    staging = HostStaging(torch.device("cpu"))
    with torch.device("meta"):
        staged = staging.fill("ids", np.arange(3), torch.long)
    assert staged.device.type == "cpu" and staged.tolist() == [0, 1, 2]
