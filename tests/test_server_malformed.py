"""No input can break the server: each malformed request is a 4xx whose error names the problem."""

from __future__ import annotations

import json

import pytest
import requests

from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow  # real server process

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def chat(**fields) -> dict:
    return {"messages": USER, **fields}


def completion(**fields) -> dict:
    return {"prompt": "hi", **fields}


# (path, body: dict | bytes, expected status, text the error must contain)
CASES = [
    (CHAT, b'{"messages": [', 400, "JSON"),
    (CHAT, b"\xff\xfe\x00{", 400, "JSON"),
    (CHAT, b"[1, 2]", 400, "body"),
    (CHAT, b'"hello"', 400, "body"),
    (CHAT, b"", 400, "body"),
    (CHAT, b'{"messages": [{"role": "user", "content": "\xff"}]}', 400, "not UTF-8"),
    (CHAT, b"[" * 100_000, 400, "nested too deeply"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}", 400, "too many digits"),
    (CHAT, {}, 400, "messages"),
    (CHAT, {"messages": []}, 400, "messages"),
    (CHAT, {"messages": "hi"}, 400, "messages"),
    (CHAT, {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    (CHAT, {"messages": [{"content": "x"}]}, 400, "messages[0].role"),
    (CHAT, chat(temperature="hot"), 400, "temperature"),
    (CHAT, chat(temperature=-1), 400, "temperature"),
    (CHAT, chat(temperature=1000), 400, "temperature"),
    (CHAT, chat(top_p=0), 400, "top_p"),
    (CHAT, chat(top_p=1.5), 400, "top_p"),
    (CHAT, chat(max_tokens=0), 400, "max_tokens"),
    (CHAT, chat(max_tokens=-5), 400, "max_tokens"),
    (CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    (CHAT, chat(max_tokens="10"), 400, "max_tokens"),
    (CHAT, chat(max_tokens=100000), 400, "max_tokens"),
    (CHAT, chat(max_completion_tokens=100000), 400, "max_completion_tokens"),
    (CHAT, chat(n=0), 400, "n"),
    (CHAT, chat(n=100), 400, "n"),
    (CHAT, chat(stop=5), 400, "stop"),
    (CHAT, chat(stop=["x"] * 20), 400, "stop"),
    (CHAT, chat(stop=[""]), 400, "stop"),
    (CHAT, chat(presence_penalty=3), 400, "presence_penalty"),
    (CHAT, chat(frequency_penalty=-3), 400, "frequency_penalty"),
    (CHAT, chat(seed="x"), 400, "seed"),
    (CHAT, chat(stream="yes"), 400, "stream"),
    (CHAT, chat(stream_options={"include_usage": "x"}), 400, "stream_options.include_usage"),
    (CHAT, chat(logprobs=5), 400, "logprobs"),
    (CHAT, chat(logprobs=True, top_logprobs=30), 400, "top_logprobs"),
    (CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    (CHAT, chat(tools=[{"type": "function"}]), 400, "tools[0].function"),
    (
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "bad name!"}}]),
        400,
        "tools[0].function.name",
    ),
    (CHAT, chat(tool_choice="sometimes"), 400, "tool_choice"),
    (CHAT, chat(response_format={"type": "xml"}), 400, "response_format.type"),
    (CHAT, chat(guided_choice="yes"), 400, "guided_choice"),
    (CHAT, chat(min_p=2), 400, "min_p"),
    (CHAT, chat(top_k=-5), 400, "top_k"),
    (CHAT, chat(repetition_penalty=0), 400, "repetition_penalty"),
    (CHAT, chat(min_tokens=50, max_tokens=10), 400, "min_tokens"),
    (CHAT, chat(model=123), 400, "model"),
    (CHAT, chat(logit_bias={"5": 100}), 400, "logit_bias"),
    (CHAT, chat(logit_bias={"5": "x"}), 400, "logit_bias.5"),
    (CHAT, chat(logit_bias=[1]), 400, "logit_bias"),
    (CHAT, chat(functions=[{"name": "f"}]), 400, "functions"),
    (CHAT, chat(function_call="auto"), 400, "function_call"),
    (COMPLETIONS, completion(logit_bias={"abc": 1}), 400, "logit_bias"),
    (
        CHAT,
        chat(chat_template_kwargs={"add_generation_prompt": False}),
        400,
        "chat_template_kwargs.add_generation_prompt",
    ),
    (CHAT, chat(chat_template_kwargs={"tokenize": True}), 400, "chat_template_kwargs.tokenize"),
    (CHAT, chat(chat_template_kwargs={"messages": 5}), 400, "chat_template_kwargs.messages"),
    (CHAT, chat(chat_template_kwargs={"tools": 5}), 400, "chat_template_kwargs.tools"),
    (
        CHAT,
        chat(chat_template_kwargs={"enable_thinking": "maybe"}),
        400,
        "chat_template_kwargs.enable_thinking",
    ),
    (CHAT, chat(model="other-model"), 404, "other-model"),
    (CHAT, {"messages": [{"role": "user", "content": "并行" * 500}]}, 400, "messages"),
    (COMPLETIONS, {}, 400, "prompt"),
    (COMPLETIONS, completion(prompt=[]), 400, "prompt"),
    (COMPLETIONS, completion(prompt=[[]]), 400, "prompt"),
    (COMPLETIONS, completion(prompt=[-1]), 400, "prompt[0]"),
    (COMPLETIONS, completion(prompt=[10**9]), 400, "vocabulary"),
    (COMPLETIONS, completion(prompt=[1, "a"]), 400, "prompt["),  # mixed list: either item is at fault
    (COMPLETIONS, completion(echo=True), 400, "echo"),
    (COMPLETIONS, completion(suffix="x"), 400, "suffix"),
    (COMPLETIONS, completion(best_of=3), 400, "best_of"),
    (COMPLETIONS, completion(logprobs=50), 400, "logprobs"),
    (COMPLETIONS, completion(stop_token_ids=[-1]), 400, "stop_token_ids[0]"),
    (COMPLETIONS, completion(min_tokens=1, stop_token_ids=list(range(320))), 400, "cover all 320 tokens"),
    (COMPLETIONS, completion(ignore_eos="no"), 400, "ignore_eos"),
    ("/tokenize", {"prompt": "a", "messages": USER}, 400, "prompt"),
    ("/tokenize", {}, 400, "prompt"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens[0]"),
    ("/detokenize", {"tokens": [10**9]}, 400, "tokens"),
    ("/detokenize", {"tokens": "abc"}, 400, "tokens"),
    ("/predict", {"prompt": {"a": 1}}, 400, "prompt"),
    ("/v1/nothing-here", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("path,body,status,needle", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_malformed_request(
    server: ServerProcess, path: str, body: dict | bytes, status: int, needle: str
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(
        server.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] or needle == error["param"], error
    assert error["code"] == status and error["type"]


BAD_TEXT = "a\ud800"  # a lone surrogate: valid JSON (as an escape), not valid Unicode text
HUGE = 10**30

# (path, body, the field the 400 must name as its `param`): invalid text and integers out of range on
# every route are refused with the field's name, before any tokenizer or tensor sees them
FIELD_CASES = [
    ("/tokenize", {"prompt": BAD_TEXT}, "prompt"),
    ("/tokenize", {"messages": [{"role": "user", "content": BAD_TEXT}]}, "messages[0].content"),
    ("/tokenize", {"prompt": "a", "model": BAD_TEXT}, "model"),
    ("/detokenize", {"tokens": [HUGE]}, "tokens[0]"),
    (COMPLETIONS, completion(prompt=BAD_TEXT), "prompt"),
    (COMPLETIONS, completion(prompt=["ok", BAD_TEXT]), "prompt"),
    (COMPLETIONS, completion(stop=[BAD_TEXT]), "stop"),
    (COMPLETIONS, completion(suffix=BAD_TEXT), "suffix"),
    (COMPLETIONS, completion(prompt=[HUGE]), "prompt[0]"),
    (COMPLETIONS, completion(seed=HUGE), "seed"),
    (COMPLETIONS, completion(seed=2**63), "seed"),
    (COMPLETIONS, completion(seed=-(2**63) - 1), "seed"),
    (COMPLETIONS, completion(max_tokens=HUGE), "max_tokens"),
    (COMPLETIONS, completion(n=HUGE), "n"),
    (COMPLETIONS, completion(best_of=HUGE), "best_of"),
    (COMPLETIONS, completion(top_k=HUGE), "top_k"),
    (COMPLETIONS, completion(logprobs=HUGE), "logprobs"),
    (COMPLETIONS, completion(min_tokens=HUGE), "min_tokens"),
    (COMPLETIONS, completion(stop_token_ids=[1, HUGE]), "stop_token_ids[1]"),
    (CHAT, {"messages": [{"role": "user", "content": BAD_TEXT}]}, "messages[0].content"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": BAD_TEXT}]}]},
        "messages[0].content[0].text",
    ),
    (CHAT, {"messages": [{"role": "user", "content": "hi", "name": BAD_TEXT}]}, "messages[0].name"),
    (CHAT, chat(stop=BAD_TEXT), "stop"),
    (CHAT, chat(user=BAD_TEXT), "user"),
    (CHAT, chat(model=BAD_TEXT), "model"),
    (CHAT, chat(seed=HUGE), "seed"),
    (CHAT, chat(max_completion_tokens=HUGE), "max_completion_tokens"),
    (CHAT, chat(logprobs=True, top_logprobs=HUGE), "top_logprobs"),
    (CHAT, chat(top_k=HUGE), "top_k"),
    ("/predict", {"prompt": BAD_TEXT}, "prompt"),
    ("/predict", {"prompt": "hi", "system_prompt": BAD_TEXT}, "system_prompt"),
    ("/predict", {"prompt": "hi", "stop": [BAD_TEXT]}, "stop"),
    ("/predict", {"prompt": "hi", "max_new_tokens": HUGE}, "max_new_tokens"),
    ("/predict", {"prompt": "hi", "top_k": HUGE}, "top_k"),
]


@pytest.mark.parametrize(
    "path,body,param", FIELD_CASES, ids=[f"{i}-{c[0]}-{c[2]}" for i, c in enumerate(FIELD_CASES)]
)
def test_invalid_text_and_integer_overflow_name_the_field(
    server: ServerProcess, path: str, body: dict, param: str
) -> None:
    response = requests.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"].startswith(f"{param}: "), error
    reason = "not valid Unicode" if BAD_TEXT in json.dumps(body, ensure_ascii=False) else "than or equal to"
    assert reason in error["message"], error


@pytest.mark.parametrize(
    "body,field",
    [
        ({"text": BAD_TEXT}, "text"),
        ({"text": "hi", "req_id": BAD_TEXT}, "req_id"),
        ({"messages": [{"role": "user", "content": BAD_TEXT}]}, "messages[0].content"),
        ({"text": "hi", "seed": HUGE}, "seed"),
        ({"text": "hi", "max_dec_len": HUGE}, "max_dec_len"),
        ({"text": "hi", "min_dec_len": HUGE}, "min_dec_len"),
    ],
)
def test_fastdeploy_invalid_text_and_overflow_name_the_field(
    server: ServerProcess, body: dict, field: str
) -> None:
    response = requests.post(
        server.url + CHAT, json={**body, "max_dec_len": body.get("max_dec_len", 2)}, timeout=30
    )
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error_code"] == 400 and answer["error_msg"].startswith(f"{field}: "), answer


def test_seeds_at_the_edges_of_int64_are_accepted(server: ServerProcess) -> None:
    for seed in (2**63 - 1, -(2**63)):  # with n=2 the second sequence's seed is seed + 1
        body = completion(seed=seed, n=2, max_tokens=2, temperature=1.0)
        response = requests.post(server.url + COMPLETIONS, json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["choices"]) == 2


def test_predict_batch_answers_around_an_item_that_is_not_unicode(server: ServerProcess) -> None:
    def answers(prompts: list[str]) -> list[str]:
        body = {"prompt": prompts, "max_new_tokens": 4, "temperature": 0}
        response = requests.post(server.url + "/predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["response"]

    with_bad_item = answers(["hi", BAD_TEXT, "there"])
    assert with_bad_item[1] == ""
    assert with_bad_item == answers(["hi", "", "there"])
    assert "prompt[1] is not valid Unicode text" in server.log()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("path", [CHAT, "/predict"])
def test_a_body_of_another_media_type_is_415(server: ServerProcess, path: str, content_type: str) -> None:
    body = json.dumps({"prompt": "hi", "messages": USER}).encode()
    response = requests.post(server.url + path, data=body, headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["param"] == "Content-Type" and content_type in error["message"], error


def test_a_body_without_content_type_is_read_as_json(server: ServerProcess) -> None:
    body = json.dumps({"prompt": "hi", "max_new_tokens": 2}).encode()
    request = requests.Request("POST", server.url + "/predict", data=body).prepare()
    assert "Content-Type" not in request.headers
    response = requests.Session().send(request, timeout=30)
    assert response.status_code == 200 and isinstance(response.json()["response"], str), response.text


def test_earlier_tool_call_arguments_nested_too_deeply_reach_the_template_as_text(
    server: ServerProcess,
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 100_000}}
    messages = [{"role": "assistant", "tool_calls": [call]}, *USER]
    tokenized = requests.post(server.url + "/tokenize", json={"messages": messages}, timeout=60)
    assert tokenized.status_code == 200 and tokenized.json()["count"] > 0, tokenized.text
    chat = requests.post(server.url + CHAT, json={"messages": messages, "max_tokens": 1}, timeout=60)
    assert chat.status_code == 200 and len(chat.json()["choices"]) == 1, chat.text


def test_an_empty_or_null_logit_bias_is_accepted(server: ServerProcess) -> None:
    for bias in ({}, None):
        body = completion(logit_bias=bias, max_tokens=2)
        response = requests.post(server.url + COMPLETIONS, json=body, timeout=30)
        assert response.status_code == 200, response.text


def test_a_temperature_or_top_p_that_underflows_float32_decodes_greedily(server: ServerProcess) -> None:
    def text(**fields: float) -> str:
        body = completion(prompt=[17, 42, 99, 7], max_tokens=6, ignore_eos=True, **fields)
        response = requests.post(server.url + COMPLETIONS, json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    greedy = text(temperature=0)
    assert text(temperature=1e-300) == greedy and text(top_p=1e-300) == greedy


def test_wrong_method_is_405(server: ServerProcess) -> None:
    response = requests.get(server.url + CHAT, timeout=10)
    assert response.status_code == 405 and response.json()["error"]["code"] == 405


def test_oversized_bodies_are_413(server: ServerProcess) -> None:
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (9 << 20)}]}).encode()
    response = requests.post(
        server.url + CHAT, data=big, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 413 and "exceeds" in response.json()["error"]["message"]

    def chunks():
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"y" * (1 << 20)
        yield b'"}'

    chunked = requests.post(
        server.url + "/predict", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413
    assert requests.get(server.url + "/v2/health/ready", timeout=10).status_code == 200


def test_the_prompt_cap_counts_each_prompt_n_times(tiny_model_dir) -> None:
    """--max-prompts-per-request caps the sequences a request creates: prompts × n."""
    server = ServerProcess(
        "--model", str(tiny_model_dir("qwen3")), "--max-prompts-per-request", "4", "--no-warmup"
    )
    server.wait_ready()
    try:

        def post(path: str, body: dict) -> requests.Response:
            return requests.post(server.url + path, json={**body, "max_tokens": 1}, timeout=60)

        for path, body in [(COMPLETIONS, completion(prompt=["a", "b"], n=2)), (CHAT, chat(n=4))]:
            response = post(path, body)
            assert response.status_code == 200 and len(response.json()["choices"]) == 4, response.text
        for path, body, param, needle in [
            (COMPLETIONS, completion(prompt=["a", "b"], n=3), "n", "n is 3 for 2 prompts: 6 sequences"),
            (COMPLETIONS, completion(prompt=[[1]] * 3, n=2), "n", "6 sequences; at most 4"),
            (COMPLETIONS, completion(prompt=[[1]] * 5), "prompt", "prompt holds 5 prompts; at most 4"),
            (CHAT, chat(n=5), "n", "n is 5 for 1 prompt: 5 sequences; at most 4"),
        ]:
            response = post(path, body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == param and needle in error["message"], error
    finally:
        server.stop()
