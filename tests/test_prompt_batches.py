"""Prompts of a whole /predict batch in one template call and one tokenizer call: the same ids as one by one."""

from __future__ import annotations

import pytest

from tokenmill.models.loader import default_model_path
from tokenmill.server.prompts import question_messages
from tokenmill.tokenizer import Tokenizer, build_byte_level_tokenizer

QUESTIONS = ["什么是共享内存？", "What is a warp?", "  padded  ", "带宽\U0001f600"]
CONVERSATIONS = [question_messages(q, system) for q in QUESTIONS for system in (None, "Answer briefly.")]


def without_template() -> Tokenizer:
    hf = build_byte_level_tokenizer()
    hf.chat_template = None
    return Tokenizer(hf)


@pytest.mark.parametrize(
    "make", [Tokenizer.byte_level, without_template, lambda: Tokenizer.from_gguf(default_model_path())]
)
def test_encode_prompts_equals_encode_prompt_of_each(make) -> None:
    tokenizer = make()
    expected = [tokenizer.encode_prompt(c) for c in CONVERSATIONS]
    assert tokenizer.encode_prompts(CONVERSATIONS) == expected
    assert len(set(map(tuple, expected))) >= len(QUESTIONS)  # without a template only the question counts
    assert tokenizer.encode_prompts([]) == []


def test_encode_many_equals_encode_of_each() -> None:
    tokenizer = Tokenizer.from_gguf(default_model_path())
    assert tokenizer.encode_many(QUESTIONS) == [tokenizer.encode(q) for q in QUESTIONS]
    ids = tokenizer.encode_many(QUESTIONS, add_special_tokens=False)
    assert tokenizer.decode_many(ids) == [tokenizer.decode(i) for i in ids]
