"""Admission checks, no model: every token id a request carries lies in the vocabulary, errors name the field."""

from __future__ import annotations

import pytest

from tokenmill.engine.input_processor import InputProcessor
from tokenmill.sampling_params import SamplingParams

VOCAB = 512


class CodePointTokenizer:
    """One token per character: enough to admit text prompts without a real tokenizer."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


@pytest.fixture
def processor() -> InputProcessor:
    return InputProcessor(CodePointTokenizer(), vocab_size=VOCAB, max_model_len=16)  # type: ignore[arg-type]


def test_a_valid_request_keeps_its_text_and_token_ids(processor: InputProcessor) -> None:
    params = SamplingParams(stop_token_ids=[0, VOCAB - 1])
    request = processor.process("r", "hi", params)
    assert (request.prompt, request.prompt_token_ids, request.params) == ("hi", [104, 105], params)
    assert processor.process("r", [1, 2], SamplingParams()).prompt is None


@pytest.mark.parametrize("stop_token_ids", [[VOCAB], [3, 10**9]])
def test_stop_token_ids_outside_the_vocabulary_are_refused_by_name(processor, stop_token_ids) -> None:
    with pytest.raises(
        ValueError, match=rf"^stop_token_ids must lie in \[0, {VOCAB}\).*got {stop_token_ids[-1]}"
    ):
        processor.process("r", "hi", SamplingParams(stop_token_ids=stop_token_ids))


def test_stop_token_ids_that_ban_every_token_before_min_tokens_are_refused_by_name() -> None:
    """Until min_tokens are out the stop token ids and EOS are banned: all of the vocabulary would
    leave the sampler nothing to draw (it drew token 0)."""
    eos = VOCAB - 1
    processor = InputProcessor(CodePointTokenizer(), VOCAB, 16, eos_token_ids=(eos,))  # type: ignore[arg-type]
    all_but_eos = list(range(eos))
    with pytest.raises(ValueError, match=rf"^stop_token_ids .*cover all {VOCAB} tokens.*min_tokens \(1\)"):
        processor.process("r", "hi", SamplingParams(min_tokens=1, stop_token_ids=all_but_eos))
    for allowed in (dict(ignore_eos=True), dict(min_tokens=0), dict(stop_token_ids=all_but_eos[1:])):
        processor.process(
            "r", "hi", SamplingParams(**{"min_tokens": 1, "stop_token_ids": all_but_eos, **allowed})
        )


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([1, VOCAB], rf"^prompt token ids must lie in \[0, {VOCAB}\)"),
        ([1, -1], r"^prompt token ids must lie"),
        ("\u0300\u0400", r"^prompt token ids must lie"),  # text whose tokens the model does not know
        ([], r"^prompt must not be empty"),
        ("", r"^prompt must not be empty"),
        ([1] * 16, r"^prompt is 16 tokens; the limit is 15"),
        ("a\ud800", r"^prompt is not valid Unicode"),
        ([1, True], r"^prompt must be a string or a list of token ids"),
        ([1.0], r"^prompt must be a string or a list of token ids"),
    ],
)
def test_bad_prompts_are_refused_by_name(processor: InputProcessor, prompt, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        processor.process("r", prompt, SamplingParams())


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1])
def test_seeds_a_generator_cannot_take_are_refused_by_name(seed: int) -> None:
    with pytest.raises(ValueError, match=r"^seed must be an integer in"):
        SamplingParams(seed=seed)
