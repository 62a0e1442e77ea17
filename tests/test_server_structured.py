"""Structured outputs, tool calls and reasoning through a real server and the official openai client.

The tiny random model writes byte noise, so every answer's shape here comes from the grammar engine:
schemas and forced tool calls must still validate, and a grammar can script the <think> and
<tool_call> text the reasoning and tool parsers read."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import jsonschema
import pytest
import requests

from tests.helpers.server_process import ServerProcess

if TYPE_CHECKING:  # imported where used: importing openai costs every collection, fast layer included, 0.5 s
    import openai

pytestmark = pytest.mark.slow  # real server process (its start-up alone takes ~4 s)

ITEM = {
    "$defs": {"size": {"enum": ["S", "M", "L"]}},
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"},
        "size": {"$ref": "#/$defs/size"},
        "qty": {"type": "integer", "minimum": 1, "maximum": 99},
        "dims": {
            "type": "object",
            "properties": {"w": {"type": "integer", "minimum": 0, "maximum": 9}, "h": {"type": "number"}},
            "required": ["w", "h"],
        },
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
    },
    "required": ["sku", "size", "qty", "dims", "notes"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["utc", "cet"]}},
            "required": ["zone"],
        },
    },
}
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def chat(client, model, **fields):
    return client.chat.completions.create(model=model, messages=USER, **{"max_tokens": 200, **fields})


def streamed(client, model, **fields) -> tuple[dict, str]:
    """The streamed answer's joined content, reasoning and tool calls, and its finish reason."""
    joined: dict = {"content": "", "reasoning_content": "", "reasoning": "", "tool_calls": {}}
    finish = None
    for chunk in chat(client, model, stream=True, **fields):
        for choice in chunk.choices:
            delta = choice.delta
            finish = choice.finish_reason or finish
            joined["content"] += delta.content or ""
            for name in ("reasoning_content", "reasoning"):
                joined[name] += getattr(delta, name, None) or ""
            for call in delta.tool_calls or []:
                entry = joined["tool_calls"].setdefault(
                    call.index, {"name": None, "arguments": "", "id": None}
                )
                if call.id:
                    assert entry["id"] is None  # id and name come once, first
                    entry["id"], entry["name"] = call.id, call.function.name
                entry["arguments"] += call.function.arguments or ""
    return joined, finish


# ---- structured outputs -----------------------------------------------------------------------------


def test_json_schema_response_format_validates(client, model) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "item", "schema": ITEM, "strict": True}}
    answer = chat(client, model, n=10, seed=7, temperature=1.0, response_format=response_format)
    for choice in answer.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), ITEM)
    joined, finish = streamed(client, model, seed=3, response_format=response_format)
    assert finish == "stop"
    jsonschema.validate(json.loads(joined["content"]), ITEM)


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"guided_regex": "[a-z]{3}@[0-9]{2}"}, lambda t: re.fullmatch("[a-z]{3}@[0-9]{2}", t)),
        ({"guided_choice": ["yes", "no"]}, lambda t: t in ("yes", "no")),
        ({"structured_outputs": {"choice": ["up", "down"]}}, lambda t: t in ("up", "down")),
        ({"structured_outputs": {"regex": "[0-9]{4}"}}, lambda t: re.fullmatch("[0-9]{4}", t)),
        ({"guided_grammar": 'root ::= "a" [bc]{1,8} "d"'}, lambda t: re.fullmatch("a[bc]{1,8}d", t)),
        (
            {"structured_outputs": {"grammar": 'root ::= ("x" | "y"){2,4}'}},
            lambda t: re.fullmatch("[xy]{2,4}", t),
        ),
        (
            {"guided_json": {"type": "object", "properties": {"a": {"enum": [1, 2]}}, "required": ["a"]}},
            lambda t: json.loads(t)["a"] in (1, 2),
        ),
        ({"structured_outputs": {"json": ITEM}}, lambda t: jsonschema.validate(json.loads(t), ITEM) is None),
        ({"response_format": {"type": "json_object"}}, lambda t: isinstance(json.loads(t), dict)),
    ],
)
def test_completions_follow_every_constraint_spelling(
    server: ServerProcess, model: str, fields, check
) -> None:
    body = {"model": model, "prompt": "go", "max_tokens": 200, "n": 4, "seed": 1, **fields}
    if "json_object" in json.dumps(fields):
        body["max_tokens"] = 256  # any object may run long on a random model: ask only that it started one
    response = requests.post(server.url + "/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    for choice in response.json()["choices"]:
        if choice["finish_reason"] == "length" and "json_object" in json.dumps(fields):
            assert choice["text"].startswith("{")
            continue
        assert choice["finish_reason"] == "stop"
        assert check(choice["text"]), choice["text"]


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "fish"}},
                }
            },
            "response_format.json_schema.schema",
            "fish",
        ),
        ({"guided_json": "{not json"}, "guided_json", "invalid JSON schema"),
        ({"guided_regex": "a(("}, "guided_regex", "invalid regular expression"),
        ({"structured_outputs": {"grammar": "root ::= missing"}}, "structured_outputs.grammar", "missing"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "exactly one"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        (
            {"guided_regex": "a", "response_format": {"type": "json_object"}},
            "guided_regex",
            "one output constraint",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema is required"),
        (
            {"guided_json": '{"type": "array", "items": ' * 1500 + "{}" + "}" * 1500},
            "guided_json",
            "nests 1501",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
            "response_format.json_schema.schema",
            "uses `not`",
        ),
        (
            {"structured_outputs": {"regex": "[^\\x00-\\U0010FFFF]"}},
            "structured_outputs.regex",
            "no text matches",
        ),
        ({"guided_grammar": 'root ::= root "a"'}, "guided_grammar", "no text matches it"),
    ],
)
def test_bad_constraints_are_400_naming_the_field(client, model, fields, param, message) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        chat(client, model, extra_body=fields)
    error = info.value.body
    assert error["param"] == param, error
    assert message in error["message"]


def test_grammars_that_allow_no_token_end_without_one(client, model) -> None:
    """A grammar with no way on after "a" ends the answer there with finish_reason "abort"; a complete
    choice under min_tokens ends with the choice. Neither answer gains the token 0 a row of -inf gave."""
    dead_end = chat(client, model, extra_body={"guided_grammar": 'root ::= "a" tail\ntail ::= tail "b"'})
    assert (dead_end.choices[0].message.content, dead_end.choices[0].finish_reason) == ("a", "abort")
    complete = chat(client, model, extra_body={"guided_choice": ["yes"], "min_tokens": 5})
    assert (complete.choices[0].message.content, complete.choices[0].finish_reason) == ("yes", "stop")


# ---- tool calls ---------------------------------------------------------------------------------------


def test_named_tool_choice_gives_a_valid_call(client, model) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    for seed in range(5):
        answer = chat(client, model, seed=seed, tools=[TIME, WEATHER], tool_choice=choice)
        (call,) = answer.choices[0].message.tool_calls
        assert answer.choices[0].finish_reason == "tool_calls"
        assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    joined, finish = streamed(client, model, seed=9, tools=[WEATHER], tool_choice=choice)
    assert finish == "tool_calls" and joined["content"] == ""
    (call,) = joined["tool_calls"].values()
    assert call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])


def test_required_tool_choice_gives_valid_calls(client, model) -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (TIME, WEATHER)}
    for seed in range(5):
        answer = chat(client, model, seed=seed, max_tokens=256, tools=[TIME, WEATHER], tool_choice="required")
        message = answer.choices[0].message
        assert answer.choices[0].finish_reason == "tool_calls", message
        assert message.content is None and message.tool_calls
        for call in message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    single = chat(
        client,
        model,
        seed=1,
        max_tokens=256,
        tools=[TIME, WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert len(single.choices[0].message.tool_calls) == 1
    joined, finish = streamed(
        client, model, seed=2, max_tokens=256, tools=[TIME, WEATHER], tool_choice="required"
    )
    assert finish == "tool_calls" and joined["tool_calls"]
    for call in joined["tool_calls"].values():
        jsonschema.validate(json.loads(call["arguments"]), schemas[call["name"]])


def test_auto_tool_choice_reads_hermes_calls_whole_and_streamed(client, model) -> None:
    """A grammar scripts the model's Hermes output; the server reads it into tool_calls."""
    script = r'Sure\. <tool_call>\n\{"name": "get_weather", "arguments": \{"city": "[a-z]{2,6}", "unit": "c"\}\}\n</tool_call>'
    fields = {"tools": [WEATHER, TIME], "extra_body": {"guided_regex": script}}
    answer = chat(client, model, seed=4, **fields)
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content == "Sure. "
    (call,) = message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["unit"] == "c"
    joined, finish = streamed(client, model, seed=4, **fields)
    assert finish == "tool_calls" and joined["content"] == "Sure. "
    (streamed_call,) = joined["tool_calls"].values()
    assert json.loads(streamed_call["arguments"]) == json.loads(call.function.arguments)


def test_tool_messages_go_through_the_template(client, model) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "c"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5 degrees"},
    ]
    answer = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], max_tokens=4)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_tool_choice_errors(client, model) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        chat(client, model, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert info.value.body["param"] == "tool_choice.function.name"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, model, tool_choice="required")
    assert info.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, model, tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"})
    assert info.value.body["param"] == "tool_choice"


# ---- reasoning ------------------------------------------------------------------------------------------


def test_thinking_goes_to_reasoning_content(client, model) -> None:
    script = {
        "guided_regex": r"<think>\n[a-z]{4,8}\n</think>\n\n[A-Z]{3}",
        "chat_template_kwargs": {"enable_thinking": True},
    }
    answer = chat(client, model, seed=5, extra_body=script)
    message = answer.choices[0].message
    assert re.fullmatch("[a-z]{4,8}\n", message.reasoning_content)
    assert message.reasoning == message.reasoning_content
    assert re.fullmatch("[A-Z]{3}", message.content)
    joined, finish = streamed(client, model, seed=5, extra_body=script)
    assert finish == "stop"
    assert (joined["reasoning_content"], joined["content"]) == (message.reasoning_content, message.content)
    assert joined["reasoning"] == joined["reasoning_content"]
    cut = chat(client, model, seed=5, max_tokens=11, extra_body=script)  # ends before </think>
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == "" and cut.choices[0].message.reasoning_content
    plain = chat(client, model, seed=5, extra_body={"guided_regex": script["guided_regex"]})  # thinking off
    assert plain.choices[0].message.content.startswith("<think>")
    assert getattr(plain.choices[0].message, "reasoning_content", None) is None
