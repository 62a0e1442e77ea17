"""Streaming text never breaks a UTF-8 character, and stop strings are held back, then cut."""

from __future__ import annotations

import random

import pytest

from tokenmill.engine.detokenizer import SequenceText
from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer

CHINESE = "并行计算：CUDA 线程块（block）由多个线程组成，共享内存🚀速度很快。"


def stream(
    tokenizer: Tokenizer, text: str, params: SamplingParams
) -> tuple[list[str], SequenceText, str | None]:
    state = SequenceText(tokenizer, params)
    pieces, stop = [], None
    for token in tokenizer.encode(text, add_special_tokens=False):
        stop = state.append(token, check_stops=True)
        pieces.append(state.take_delta(finished=stop is not None))
        if stop is not None:
            break
    pieces.append(state.take_delta(finished=True))
    return pieces, state, stop


@pytest.mark.slow
def test_chinese_streams_whole_characters_with_the_default_tokenizer(default_llm) -> None:
    tokenizer = default_llm.tokenizer
    ids = tokenizer.encode(CHINESE, add_special_tokens=False)
    assert len(ids) > len(CHINESE)  # characters really are split across tokens
    pieces, state, _ = stream(tokenizer, CHINESE, SamplingParams())
    assert "".join(pieces) == CHINESE == state.text
    assert all("\ufffd" not in p for p in pieces)


def test_byte_level_tokenizer_splits_every_character_and_still_streams_cleanly() -> None:
    tokenizer = Tokenizer.byte_level()
    assert len(tokenizer.encode(CHINESE)) == len(CHINESE.encode())
    pieces, _, _ = stream(tokenizer, CHINESE, SamplingParams())
    assert "".join(pieces) == CHINESE and all("\ufffd" not in p for p in pieces)


def test_stop_string_is_cut_and_its_prefix_never_streamed() -> None:
    tokenizer = Tokenizer.byte_level()
    pieces, state, stop = stream(tokenizer, "abc STOP here", SamplingParams(stop=["STOP"]))
    assert stop == "STOP"
    assert state.text == "abc " == "".join(pieces)
    assert not any("S" in p for p in pieces)


def test_partial_stop_prefix_is_released_when_it_turns_out_harmless() -> None:
    tokenizer = Tokenizer.byte_level()
    params = SamplingParams(stop=["</answer>"])
    state = SequenceText(tokenizer, params)
    released = ""
    for token in tokenizer.encode("x </ans y", add_special_tokens=False):
        assert state.append(token, check_stops=True) is None
        released += state.take_delta(finished=False)
        if state.text.endswith("</ans"):
            assert released == "x "  # "</ans" might still become the stop string
    assert released == "x </ans y"


def test_stop_string_spanning_chinese_tokens() -> None:
    tokenizer = Tokenizer.byte_level()
    pieces, state, stop = stream(tokenizer, "答案是并行计算。问题：下一题", SamplingParams(stop=["问题："]))
    assert stop == "问题：" and state.text == "答案是并行计算。" == "".join(pieces)


def test_the_held_back_tail_is_the_longest_that_could_still_become_a_stop_string() -> None:
    """Against the rule stated plainly: hold back the longest tail (shorter than the longest stop) that
    some stop string starts with."""
    rng = random.Random(0)
    tokenizer = Tokenizer.byte_level()
    for _ in range(500):
        stops = ["".join(rng.choices("ab", k=rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        text = SequenceText(tokenizer, SamplingParams(stop=stops))
        text.text = "".join(rng.choices("abc", k=rng.randint(0, 8)))
        longest = max(map(len, stops))
        keeps = [
            k
            for k in range(1, min(longest - 1, len(text.text)) + 1)
            if any(s.startswith(text.text[-k:]) for s in stops)
        ]
        assert text.releasable_chars(finished=False) == len(text.text) - max(keeps, default=0), (
            stops,
            text.text,
        )


def test_a_stream_ending_inside_a_character_ends_like_the_whole_decode() -> None:
    """The bytes of an unfinished character are shown at the end, as U+FFFD, by a stream as by the
    decode of a sequence nobody streamed: streamed pieces always add up to the whole answer."""
    tokenizer = Tokenizer.byte_level()
    ids = tokenizer.encode("ab🚀", add_special_tokens=False)[:-2]  # two of the rocket's four bytes
    whole = SequenceText(tokenizer, SamplingParams(), incremental=False)
    whole.finish(ids)
    streamed = SequenceText(tokenizer, SamplingParams())
    pieces = []
    for token in ids:
        streamed.append(token, check_stops=True)
        pieces.append(streamed.take_delta(finished=False))
    streamed.finish(ids)
    pieces.append(streamed.take_delta(finished=True))
    assert whole.text.startswith("ab\ufffd")
    assert "".join(pieces) == streamed.text == whole.text
