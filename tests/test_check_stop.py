"""`check_stop`, the pure stop rule, on fake sequences: stop strings, EOS, stop ids, min/max tokens, context."""

from __future__ import annotations

import pytest

from tests.helpers.fake_sequences import make_seq
from tokenmill.engine.output_processor import check_stop
from tokenmill.engine.sequence import Sequence

EOS = 2
MAX_MODEL_LEN = 32


def generated(outputs: list[int], prompt_len: int = 4, **params) -> Sequence:
    """A sequence whose newest token is `outputs[-1]`, as check_stop sees it."""
    seq = make_seq(list(range(10, 10 + prompt_len)), **{"max_tokens": 100, **params})
    for token in outputs:
        seq.append_token(token)
    return seq


def stop_of(seq: Sequence, stop_string: str | None = None):
    return check_stop(seq, seq.token_ids[-1], stop_string, (EOS,), MAX_MODEL_LEN)


def test_an_ordinary_token_goes_on() -> None:
    assert stop_of(generated([5])) is None


def test_eos_stops_with_no_stop_reason() -> None:
    assert stop_of(generated([5, EOS])) == ("stop", None)


def test_ignore_eos_generates_past_it() -> None:
    assert stop_of(generated([5, EOS], ignore_eos=True)) is None


def test_a_stop_token_id_stops_and_is_the_stop_reason() -> None:
    assert stop_of(generated([5, 9], stop_token_ids=[9, 11])) == ("stop", 9)
    assert stop_of(generated([5, 9], stop_token_ids=[9], ignore_eos=True)) == ("stop", 9)


def test_a_stop_string_stops_and_is_the_stop_reason() -> None:
    assert stop_of(generated([5]), stop_string="###") == ("stop", "###")


@pytest.mark.parametrize("stop", [{}, {"stop_token_ids": [EOS]}])
def test_min_tokens_holds_every_stop_back(stop) -> None:
    assert stop_of(generated([EOS, EOS], min_tokens=3, **stop)) is None
    assert stop_of(generated([5, 6], min_tokens=3), stop_string="x") is None
    assert stop_of(generated([5, 6, EOS], min_tokens=3, **stop)) == ("stop", None)


def test_max_tokens_ends_with_length() -> None:
    assert stop_of(generated([5, 6], max_tokens=3)) is None
    assert stop_of(generated([5, 6, 7], max_tokens=3)) == ("length", None)


def test_a_stop_on_the_last_allowed_token_is_a_stop() -> None:
    assert stop_of(generated([5, 6, EOS], max_tokens=3)) == ("stop", None)


def test_min_tokens_does_not_hold_back_the_length_limits() -> None:
    assert stop_of(generated([5, 6], max_tokens=2, min_tokens=2)) == ("length", None)
    assert stop_of(generated([5] * 4, prompt_len=28, min_tokens=10)) == ("length", None)


def test_the_context_ends_a_sequence_whatever_max_tokens_says() -> None:
    assert stop_of(generated([5] * 3, prompt_len=28, max_tokens=None)) is None
    assert stop_of(generated([5] * 4, prompt_len=28, max_tokens=None)) == ("length", None)
    assert stop_of(generated([5] * 4, prompt_len=28, max_tokens=50)) == ("length", None)
