"""Output processor, no model: which updates a request gets, what they carry, and stops decided on text."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.fake_sequences import make_seq
from tokenmill.engine.input_processor import EngineRequest
from tokenmill.engine.output_processor import OutputProcessor
from tokenmill.engine.sequence import Sequence, SequenceStatus
from tokenmill.tokenizer import Tokenizer

PROMPT = [1, 2]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.byte_level()


def added(processor: OutputProcessor, stream: bool, **params) -> Sequence:
    seq = make_seq(PROMPT, "req", max_tokens=10, **params)
    processor.add(EngineRequest("req", "hi", PROMPT, seq.params), [seq], stream)
    return seq


def feed(processor: OutputProcessor, seq: Sequence, text: str):
    """Sample `text` token by token; returns each step's outputs (finishing the sequence on a stop)."""
    steps = []
    for token in processor.tokenizer.encode(text, add_special_tokens=False):
        seq.append_token(token)
        stop = processor.process_token(seq, token)
        if stop is not None:
            seq.status, (seq.finish_reason, seq.stop_reason) = SequenceStatus.FINISHED, stop
        steps.append(processor.outputs([seq]))
        if stop is not None:
            break
    return steps


def test_a_stream_gets_an_update_per_token_with_deltas(tokenizer) -> None:
    processor = OutputProcessor(tokenizer, eos_token_ids=(0,), max_model_len=64)
    seq = added(processor, stream=True)
    steps = feed(processor, seq, "abc")
    assert [[o.outputs[0].delta_text for o in step] for step in steps] == [["a"], ["b"], ["c"]]
    abc = tokenizer.encode("abc", add_special_tokens=False)
    assert [step[0].outputs[0].delta_token_ids for step in steps] == [[t] for t in abc]
    assert not steps[-1][0].finished and "req" in processor


def test_a_non_stream_request_gets_its_first_update_and_its_last_only(tokenizer) -> None:
    processor = OutputProcessor(tokenizer, eos_token_ids=(0,), max_model_len=64)
    seq = added(processor, stream=False, stop=["cd"])
    steps = feed(processor, seq, "abcde")
    assert [len(step) for step in steps] == [1, 0, 0, 1]  # "cd" ends it at the fourth token
    last = steps[-1][0]
    assert last.finished and last.prompt == "hi" and last.prompt_token_ids == PROMPT
    assert (last.outputs[0].text, last.outputs[0].finish_reason, last.outputs[0].stop_reason) == (
        "ab",
        "stop",
        "cd",
    )
    assert last.outputs[0].token_ids == tokenizer.encode("abcd", add_special_tokens=False)
    assert "req" not in processor and len(processor) == 0


def test_finalize_reports_what_was_generated_so_far(tokenizer) -> None:
    processor = OutputProcessor(tokenizer, eos_token_ids=(0,), max_model_len=64)
    seq = added(processor, stream=False)
    feed(processor, seq, "xy")
    seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
    final = processor.finalize("req")
    assert final.finished and final.outputs[0].text == "xy" and final.outputs[0].finish_reason == "abort"
    assert processor.seqs_of("req") is None


def test_only_requests_that_report_this_step_get_an_output_in_batch_order(tokenizer) -> None:
    processor = OutputProcessor(tokenizer, eos_token_ids=(0,), max_model_len=64)
    quiet = make_seq(PROMPT, "quiet", max_tokens=3)
    loud = make_seq(PROMPT, "loud", max_tokens=3)
    pair = [Sequence("pair", i, PROMPT, quiet.params, torch.device("cpu")) for i in (0, 1)]
    for seq, stream in ((quiet, False), (loud, True)):
        processor.add(EngineRequest(seq.request_id, None, PROMPT, seq.params), [seq], stream)
    processor.add(EngineRequest("pair", None, PROMPT, quiet.params), pair, False)
    batch = [quiet, *pair, loud]
    abc = tokenizer.encode("abc", add_special_tokens=False)
    reported = []
    for step in range(3):
        for seq in batch:
            if seq is pair[1] and step == 2:
                continue  # the pair's second sequence lags one token behind
            seq.append_token(abc[step])
            stop = processor.process_token(seq, seq.token_ids[-1])
            if stop is not None:
                seq.status, (seq.finish_reason, seq.stop_reason) = SequenceStatus.FINISHED, stop
        reported.append([(o.request_id, o.finished) for o in processor.outputs(batch)])
    assert reported == [
        [("quiet", False), ("pair", False), ("loud", False)],
        [("loud", False)],
        [("quiet", True), ("loud", True)],  # the pair waits for its second sequence
    ]
    pair[1].append_token(abc[2])
    pair[1].status, pair[1].finish_reason = SequenceStatus.FINISHED, "length"
    (last,) = processor.outputs([pair[1]])
    assert last.finished and [o.text for o in last.outputs] == ["abc", "abc"] and len(processor) == 0


def test_requests_finishing_together_are_decoded_in_one_call(tokenizer, monkeypatch) -> None:
    """A big non-streamed batch ends in a few steps: its texts are decoded per step, not per sequence,
    and come out as the one-by-one decode would have them (a character cut at the end included)."""
    processor = OutputProcessor(tokenizer, eos_token_ids=(0,), max_model_len=64)
    texts = ["共享内存", "ab", "带宽\U0001f600"]
    answers = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    answers[2] = answers[2][:-1]  # ends inside the emoji's bytes
    seqs = [make_seq(PROMPT, f"r{i}", max_tokens=64) for i in range(3)]
    for seq in seqs:
        processor.add(EngineRequest(seq.request_id, None, PROMPT, seq.params), [seq], False)
    calls = []
    decode_many = tokenizer.decode_many
    monkeypatch.setattr(tokenizer, "decode_many", lambda *a: calls.append(1) or decode_many(*a))
    monkeypatch.setattr(tokenizer, "decode", lambda *a, **k: pytest.fail("decoded one sequence alone"))
    for seq, answer in zip(seqs, answers):
        for token in answer:
            seq.append_token(token)
            processor.process_token(seq, token)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, "length"
    outputs = processor.outputs(seqs)
    assert calls == [1]
    expected = [tokenizer.hf.decode(answer, skip_special_tokens=True) for answer in answers]
    assert [o.outputs[0].text for o in outputs] == expected and expected[2].endswith("\ufffd")
