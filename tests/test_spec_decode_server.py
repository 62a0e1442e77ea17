"""Speculative decoding behind a real server: HTTP answers (whole and streamed) are the greedy text of an
engine without speculation, and /metrics counts what was proposed and accepted."""

from __future__ import annotations

import json

import pytest
import requests

from tests.helpers.server_process import ServerProcess
from tokenmill import LLM, SamplingParams

pytestmark = pytest.mark.slow  # a server process


def test_server_with_ngram_answers_the_greedy_text_and_reports_acceptance(tiny_model_dir) -> None:
    model = str(tiny_model_dir("qwen3"))
    prompt = "copy: the cat sat on the mat. copy: the cat sat on the mat. copy: the cat"
    expected = (
        LLM(model, device="cpu")
        .generate(prompt, SamplingParams(temperature=0, max_tokens=48, ignore_eos=True), use_tqdm=False)[0]
        .outputs[0]
        .text
    )
    server = ServerProcess(
        "--model", model, "--speculative-method", "ngram", "--no-speculative-adaptive", "--no-warmup"
    ).wait_ready()
    try:
        body = {"prompt": prompt, "max_tokens": 48, "temperature": 0, "ignore_eos": True}
        answer = requests.post(server.url + "/v1/completions", json=body, timeout=120).json()
        assert answer["choices"][0]["text"] == expected
        with requests.post(
            server.url + "/v1/completions", json={**body, "stream": True}, stream=True, timeout=120
        ) as response:
            lines = [line.decode() for line in response.iter_lines() if line]
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks) == expected
        proposed = server.metric("tokenmill:spec_decode_num_draft_tokens_total")
        accepted = server.metric("tokenmill:spec_decode_num_accepted_tokens_total")
        assert proposed > 0 and 0 < accepted <= proposed
        rate = server.metric("tokenmill:spec_decode_acceptance_rate")
        assert rate == pytest.approx(accepted / proposed)
    finally:
        server.stop()
