"""The OpenAI-compatible API through the official `openai` client (sync, async, streaming)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
import requests

from tests.helpers.server_process import ServerProcess

if TYPE_CHECKING:  # imported where used: importing openai costs every collection, fast layer included, 0.5 s
    import openai

pytestmark = pytest.mark.slow  # real server process

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "共享内存是什么？"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


def prompt_tokens(server: ServerProcess, **body) -> int:
    return requests.post(server.url + "/tokenize", json=body, timeout=10).json()["count"]


def test_chat_usage_and_finish_reason(client: openai.OpenAI, model: str, server: ServerProcess) -> None:
    response = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=7, temperature=0, extra_body={"ignore_eos": True}
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert response.usage.completion_tokens == 7
    assert response.usage.prompt_tokens == prompt_tokens(server, messages=MESSAGES)
    assert response.usage.total_tokens == response.usage.prompt_tokens + 7


def test_chat_stream_equals_non_stream(client: openai.OpenAI, model: str) -> None:
    kwargs = dict(
        model=model, messages=MESSAGES, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
    )
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole
    assert finish == "length" and usage.completion_tokens == 16


def test_completions_with_text_and_token_prompts(
    client: openai.OpenAI, model: str, server: ServerProcess
) -> None:
    response = client.completions.create(
        model=model, prompt=["hello", "world"], max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage.completion_tokens == 10
    ids = requests.post(server.url + "/tokenize", json={"prompt": "hello"}, timeout=10).json()["tokens"]
    by_ids = client.completions.create(
        model=model, prompt=ids, max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert by_ids.choices[0].text == response.choices[0].text


def test_completion_stream_with_usage(client: openai.OpenAI, model: str) -> None:
    chunks = list(
        client.completions.create(
            model=model,
            prompt="abc",
            max_tokens=6,
            stream=True,
            temperature=0,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason == "length"


def test_async_client_concurrent(server: ServerProcess, model: str) -> None:
    import openai

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused")
        calls = [
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=8, temperature=0
            )
            for i in range(16)
        ]
        results = await asyncio.gather(*calls)
        await client.close()
        return [r.choices[0].finish_reason for r in results]

    assert all(reason in ("stop", "length") for reason in asyncio.run(run()))


def test_n_seed_stop_and_logprobs(client: openai.OpenAI, model: str) -> None:
    response = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=8,
        n=2,
        seed=3,
        temperature=1.0,
        logprobs=True,
        top_logprobs=2,
    )
    assert [c.index for c in response.choices] == [0, 1]
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens // 2 or len(content) > 0
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) >= 2 for entry in content)
    again = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=8, n=2, seed=3, temperature=1.0
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in response.choices]
    greedy = (
        client.completions.create(
            model=model, prompt="abcdef", max_tokens=20, temperature=0, extra_body={"ignore_eos": True}
        )
        .choices[0]
        .text
    )
    if len(greedy) > 4:
        stop = greedy[2:4]
        cut = client.completions.create(
            model=model,
            prompt="abcdef",
            max_tokens=20,
            temperature=0,
            stop=[stop],
            extra_body={"ignore_eos": True},
        ).choices[0]
        assert cut.finish_reason == "stop" and cut.text == greedy[: greedy.index(stop)]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert "nope" in str(info.value)


def test_tokenize_detokenize_version(server: ServerProcess) -> None:
    tokens = requests.post(server.url + "/tokenize", json={"prompt": "并行计算"}, timeout=10).json()["tokens"]
    text = requests.post(server.url + "/detokenize", json={"tokens": tokens}, timeout=10).json()["prompt"]
    assert text == "并行计算"
    assert requests.get(server.url + "/version", timeout=10).json()["version"]


def sse_events(server: ServerProcess, path: str, body: dict) -> list[dict]:
    with requests.post(server.url + path, json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200, response.text
        lines = [line.decode() for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_wire_shapes_send_null_or_leave_out_as_openai_does(server: ServerProcess) -> None:
    """Fields OpenAI sends as null stay null; `usage` in chunks and `role` in deltas appear only when due."""
    greedy = {"max_tokens": 3, "temperature": 0, "ignore_eos": True}
    whole = requests.post(server.url + "/v1/completions", json={"prompt": "hi", **greedy}, timeout=60).json()
    assert set(whole) == {"id", "object", "created", "model", "choices", "usage"}
    assert whole["object"] == "text_completion" and whole["usage"]["total_tokens"] > 3
    assert whole["choices"][0]["logprobs"] is None and whole["choices"][0]["stop_reason"] is None

    chat = {"messages": MESSAGES, **greedy}
    answer = requests.post(server.url + "/v1/chat/completions", json=chat, timeout=60).json()
    assert answer["object"] == "chat.completion"
    assert set(answer["choices"][0]) == {"index", "message", "logprobs", "finish_reason", "stop_reason"}
    assert set(answer["choices"][0]["message"]) == {"role", "content"}

    chunks = sse_events(server, "/v1/chat/completions", {**chat, "stream": True})
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
    assert all(set(d) == {"content"} for d in deltas[1:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(set(c["choices"][0]) == {"index", "delta", "logprobs", "finish_reason"} for c in chunks)

    with_usage = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    chunks = sse_events(server, "/v1/chat/completions", with_usage)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3

    pieces = sse_events(server, "/v1/completions", {"prompt": "hi", **greedy, "stream": True})
    assert all("usage" not in c and c["object"] == "text_completion" for c in pieces)
    assert all(
        set(c["choices"][0]) == {"index", "text", "logprobs", "finish_reason", "stop_reason"} for c in pieces
    )
