"""The tensor-parallel control channel through a real pipe: a worker receives exactly the inputs rank 0
built (the arrays, the block table it rebuilds from changed rows, the host lists it derives), and a
steady decode step costs kilobytes however long its sequences' block lists are."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from tokenmill import SamplingParams
from tokenmill.distributed.control import ControlReceiver, ControlSender, LoRAFill
from tokenmill.distributed.step_message import StepEncoder, StepHeader
from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.host_staging import HostStaging
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.engine.step_inputs import InputBuilder, StepInputs

CPU = torch.device("cpu")
BLOCK = 4
NULL_BLOCK = 999


def _sequence(tokens: int, first_block: int, computed: int) -> Sequence:
    seq = Sequence("r", 0, list(range(3, 3 + tokens)), SamplingParams(temperature=0), CPU)
    seq.block_ids = list(range(first_block, first_block + -(-(tokens + 1) // BLOCK)))
    seq.num_computed_tokens = computed
    return seq


def _builder(lora_slots: int = 0) -> InputBuilder:
    return InputBuilder(BlockTable(BLOCK, 64, 64, NULL_BLOCK), CPU, lora_slots)


def _channel() -> tuple[ControlSender, ControlReceiver]:
    receive, send = multiprocessing.Pipe(duplex=False)
    return ControlSender([send]), ControlReceiver(receive, HostStaging(CPU))


def _assert_same(got: StepInputs, sent: StepInputs) -> None:
    for name in ("input_ids", "positions", "slot_mapping", "seq_lens", "query_start_loc", "logits_indices",
                 "block_tables"):  # fmt: skip
        expected, actual = getattr(sent, name), getattr(got, name)
        if expected is None:
            assert actual is None, name
            continue
        assert actual.dtype == expected.dtype, name
        np.testing.assert_array_equal(actual.numpy(), expected.numpy(), err_msg=name)
    for name in ("num_seqs", "num_decodes", "width", "query_lens", "seq_lens_cpu"):
        assert getattr(got, name) == getattr(sent, name), name
    assert got.sampling_seqs == [] and got.proposals is None


def test_every_kind_of_step_arrives_as_rank_0_built_it() -> None:
    """A mixed step (decodes and prefill chunks), then decode steps whose rows change in every way the
    delta must carry: a new block, a row taken by another sequence with fewer blocks (the table gets
    narrower), a row that becomes padding, and the width growing back."""
    sender, receiver = _channel()
    builder = _builder()
    long_seq, short_seq, other = _sequence(30, 100, 29), _sequence(9, 200, 0), _sequence(5, 300, 4)
    steps = [
        (ScheduledBatch([long_seq, short_seq], [1, 9], 1), None, None),
        (ScheduledBatch([long_seq, short_seq], [1, 1], 2), torch.tensor([7, 8]), 2),
        (ScheduledBatch([other, short_seq], [1, 1], 2), None, 4),  # fewer blocks in row 0; a padding row
        (ScheduledBatch([long_seq], [1], 1), torch.tensor([9]), 2),  # wider again; row 1 padding
    ]
    previous = torch.tensor([0])
    for number, (batch, token_source, rows) in enumerate(steps, start=1):
        for seq in batch.seqs:
            if seq.num_computed_tokens + 1 > len(seq.block_ids) * BLOCK:
                seq.block_ids.append(seq.block_ids[-1] + 1)
        sent = builder.build_inputs(batch, token_source, rows)
        header = StepHeader(number, rows is not None, (3 * number, 0xFFFFFFFF))
        sender.send_step(sent, header)
        previous = token_source if token_source is not None else previous
        got, received = receiver.receive(previous)
        assert received == header
        _assert_same(got, sent)
        assert got.token_source is (None if token_source is None else previous)
        for seq, new in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += new
            if seq.num_computed_tokens == len(seq.token_ids):
                seq.append_token(number)


def test_a_steady_decode_step_of_256_sequences_sends_kilobytes_not_its_block_table() -> None:
    """256 sequences of 64 blocks each: the first message carries the whole table (64 KiB), the next
    continuation steps only the per-token arrays, until a sequence needs a new block."""
    encoder = StepEncoder()
    builder = InputBuilder(BlockTable(BLOCK, 256, 128, NULL_BLOCK * 100), CPU)
    seqs = [_sequence(253, 1000 * i, 252) for i in range(256)]
    sizes = []
    for step in range(1, 4):
        batch = ScheduledBatch(list(seqs), [1] * 256, 256)
        sent = builder.build_inputs(batch, torch.zeros(256, dtype=torch.long), 256)
        sizes.append(len(encoder.encode(sent, StepHeader(step, True, (0, 0)))))
        for seq in seqs:
            seq.num_computed_tokens += 1
    assert sizes[0] > 256 * 64 * 4
    per_token = 256 * (3 * 8 + 2 * 4)  # positions, slots, logits indices; context lengths, starts
    assert sizes[1] == sizes[2] < per_token + 256, sizes


def test_lora_mappings_fills_and_messages_larger_than_the_buffer_arrive_whole() -> None:
    sender, receiver = _channel()
    builder = _builder(lora_slots=2)
    seqs = [_sequence(60, 64 * i, 0) for i in range(3)]  # 5 KiB: more than the first buffer
    for seq, slot in zip(seqs, (1, -1, 0)):
        seq.lora_slot = slot
    sender.send_lora_fill(LoRAFill(1, "tone", "/adapters/tone"))
    assert receiver.receive(None) == LoRAFill(1, "tone", "/adapters/tone")
    sent = builder.build_inputs(ScheduledBatch(seqs, [60, 60, 60], 0))
    sender.send_step(sent, StepHeader(1, False, (0, 0)))
    got, _ = receiver.receive(None)
    _assert_same(got, sent)
    for name in ("token_slots", "sorted_tokens", "tile_slots", "tile_starts", "tile_ends"):
        torch.testing.assert_close(getattr(got.lora, name), getattr(sent.lora, name), rtol=0, atol=0)
    sender.send_shutdown()
    assert receiver.receive(None) is None


def test_a_continuation_before_any_sampled_tokens_is_refused() -> None:
    sender, receiver = _channel()
    seq = _sequence(8, 0, 7)
    sent = _builder().build_inputs(ScheduledBatch([seq], [1], 1), torch.tensor([5]))
    sender.send_step(sent, StepHeader(1, False, (0, 0)))
    with pytest.raises(RuntimeError, match="continuation"):
        receiver.receive(None)


def test_steps_of_a_repeated_layout_each_arrive_with_their_own_values() -> None:
    """Steady decoding repeats one layout, whose views both ends make once: each step must still carry
    its own positions, slots and context lengths (the two staging sets alternate under the worker)."""
    sender, receiver = _channel()
    builder = _builder()
    seq = _sequence(9, 0, 8)
    previous = torch.tensor([0])
    for step in range(1, 6):
        if seq.num_computed_tokens + 1 > len(seq.block_ids) * BLOCK:
            seq.block_ids.append(seq.block_ids[-1] + 1)
        sent = builder.build_inputs(ScheduledBatch([seq], [1], 1), previous, 1)
        sender.send_step(sent, StepHeader(step, True, (step, 0)))
        got, _ = receiver.receive(previous)
        _assert_same(got, sent)
        assert got.positions.tolist() == [8 + step - 1]
        seq.num_computed_tokens += 1
        seq.append_token(step)
