"""The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) answers, and agrees with transformers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokenmill import SamplingParams
from tokenmill.models.loader import default_model_path

pytestmark = pytest.mark.slow  # the real default model's weights


def test_answers_an_obvious_question(default_llm) -> None:
    out = default_llm.chat(
        [{"role": "user", "content": "What is the capital of France?"}],
        SamplingParams(temperature=0, max_tokens=32),
        use_tqdm=False,
    )[0].outputs[0]
    assert "Paris" in out.text
    assert out.finish_reason == "stop"  # ended on <|im_end|>, read from the GGUF metadata


def test_logprobs_match_transformers_on_the_same_gguf(default_llm) -> None:
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    prompt_ids = default_llm.tokenizer.encode_chat(messages)
    out = default_llm.generate(
        [prompt_ids], SamplingParams(temperature=0, max_tokens=12, logprobs=5), use_tqdm=False
    )
    completion = out[0].outputs[0]
    path = default_model_path()
    reference = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = torch.tensor([prompt_ids + completion.token_ids])
    with torch.no_grad():
        logits = reference(ids).logits[0, len(prompt_ids) - 1 : -1].float().log_softmax(-1)
    assert logits.argmax(-1).tolist() == completion.token_ids
    assert completion.logprobs is not None and len(completion.logprobs) == len(completion.token_ids)
    worst = 0.0
    for step, entry in enumerate(completion.logprobs):
        assert len(entry) >= 5
        for token, value in entry.items():
            worst = max(worst, abs(value - logits[step, token].item()))
    assert worst < 2e-3, worst
