"""Reading chat answers, from scripted outputs: Hermes tool calls and Qwen3 reasoning, whole and cut into
stream chunks at every place (tags split across chunks included) — a stream must join to the whole."""

from __future__ import annotations

import json

import pytest

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.server.chat_output import ChoiceReader
from tokenmill.server.openai_dialects import ChatDialect
from tokenmill.server.openai_requests import ChatCompletionRequest, template_messages
from tokenmill.server.reasoning import ReasoningSplitter, opens_thinking
from tokenmill.server.tool_parsers import HermesToolParser, NamedCallParser, RequiredCallsParser
from tokenmill.server.tools import ToolUse
from tokenmill.tokenizer import Tokenizer

TWO_CALLS = (
    'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa}r<is", "days": [1, 2]}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
CALLS = [("get_weather", {"city": "Pa}r<is", "days": [1, 2]}), ("get_time", {})]

DEEP = "[" * 100_000  # valid JSON so far, nested deeper than the json module can recurse


def read(parser, chunks: list[str]) -> tuple[str, list[tuple[str, dict]], list[str]]:
    """Content, calls (name, arguments) and ids from feeding `chunks` then finishing."""
    content, calls = "", {}
    for piece in [*(parser.feed(c) for c in chunks), parser.finish()]:
        content += piece[0]
        for delta in piece[1]:
            if delta.id is not None:
                assert delta.index not in calls  # the name comes once, first
                calls[delta.index] = [delta.id, delta.name, ""]
            calls[delta.index][2] += delta.arguments
    return (
        content,
        [(name, json.loads(args)) for _, name, args in calls.values()],
        [c[0] for c in calls.values()],
    )


def cuts(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and split in two at every position."""
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


@pytest.mark.parametrize("chunks", cuts(TWO_CALLS))
def test_hermes_calls_are_read_wherever_the_stream_is_cut(chunks: list[str]) -> None:
    content, calls, ids = read(HermesToolParser(), chunks)
    assert content == "Let me look.\n"
    assert calls == CALLS
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_hermes_arguments_stream_before_the_call_closes() -> None:
    parser = HermesToolParser()
    _, deltas = parser.feed('<tool_call>{"name": "f", "arguments": {"a": ')
    assert [(d.name, d.arguments) for d in deltas] == [("f", ""), (None, '{"a": ')]
    _, deltas = parser.feed("12}}\n</tool_")
    assert [d.arguments for d in deltas] == ["12}"]
    assert parser.feed("call>") == ("", [])


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ("no tools here", "no tools here", []),
        ("a < b and a <tool", "a < b and a <tool", []),
        ("x <tool_call>not json</tool_call>", "x <tool_call>not json</tool_call>", []),
        ('<tool_call>{"name": "f", "arguments": {"k": 1}}', "", [("f", {"k": 1})]),  # no end tag before EOS
        ('<tool_call>{"arguments": {"k": 1}, "name": "f"}</tool_call>', "", [("f", {"k": 1})]),
        pytest.param(f"<tool_call>{DEEP}</tool_call>", f"<tool_call>{DEEP}</tool_call>", [], id="deep"),
    ],
)
def test_hermes_edge_cases(text: str, content: str, calls: list) -> None:
    got_content, got_calls, _ = read(HermesToolParser(), [text])
    assert (got_content, got_calls) == (content, calls)


def test_call_cut_by_max_tokens_keeps_what_was_streamed() -> None:
    """Whole or streamed, a call cut short has its name and the arguments text as far as it came."""
    for chunks in cuts('<tool_call>{"name": "f", "arguments": {"k": '):
        parser = HermesToolParser()
        deltas = [d for c in chunks for d in parser.feed(c)[1]] + parser.finish()[1]
        assert [d.name for d in deltas if d.id] == ["f"]
        assert "".join(d.arguments for d in deltas) == '{"k": '


def test_calls_nested_deeper_than_the_stack_are_text() -> None:
    name_first = '<tool_call>{"name": "f", "arguments": ' + DEEP
    deltas = HermesToolParser().feed(name_first)[1]
    assert [d.name for d in deltas if d.id] == ["f"] and "".join(d.arguments for d in deltas) == DEEP
    assert read(RequiredCallsParser(), [DEEP])[:2] == (DEEP, [])
    earlier = {"id": "c1", "type": "function", "function": {"name": "w", "arguments": DEEP}}
    body = ChatCompletionRequest(messages=[{"role": "assistant", "tool_calls": [earlier]}])
    assert template_messages(body.messages)[0]["tool_calls"][0]["function"]["arguments"] == DEEP


def test_forced_call_parsers() -> None:
    assert read(NamedCallParser("f"), ['{"a"', ": 1}"])[1] == [("f", {"a": 1})]
    content, calls, _ = read(
        RequiredCallsParser(),
        ['[{"name": "f", "parameters": {"a": 1}}, ', '{"name": "g", "parameters": {}}]'],
    )
    assert (content, calls) == ("", [("f", {"a": 1}), ("g", {})])
    assert read(RequiredCallsParser(), ['[{"name": "f", "para'])[:2] == ('[{"name": "f", "para', [])


THOUGHT = "<think>\nFirst, 2+2.\n</think>\n\nIt is 4."


@pytest.mark.parametrize("chunks", cuts(THOUGHT))
def test_reasoning_splits_wherever_the_stream_is_cut(chunks: list[str]) -> None:
    splitter = ReasoningSplitter(starts_inside=False)
    pieces = [splitter.feed(c) for c in chunks] + [splitter.finish()]
    assert ("".join(p[0] for p in pieces), "".join(p[1] for p in pieces)) == ("First, 2+2.\n", "It is 4.")


@pytest.mark.parametrize(
    ("text", "inside", "split"),
    [
        ("<think>\nstill thinking", False, ("still thinking", "")),  # cut before </think>: all reasoning
        ("thinking</think>answer", True, ("thinking", "answer")),  # the template opened <think>
        ("cut short", True, ("cut short", "")),
        ("plain answer", False, ("", "plain answer")),
        ("<thin", False, ("", "<thin")),
    ],
)
def test_reasoning_cases(text: str, inside: bool, split: tuple[str, str]) -> None:
    splitter = ReasoningSplitter(inside)
    reasoning, content = splitter.feed(text)
    rest = splitter.finish()
    assert (reasoning + rest[0], content + rest[1]) == split


def test_opens_thinking() -> None:
    assert opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ---- the chat dialect, whole and streamed, on scripted engine outputs ---------------------------------


def outputs(text: str, finish: str = "stop") -> list[RequestOutput]:
    """The engine's updates for one choice producing `text` four characters at a time."""
    updates, sent = [], 0
    while sent < len(text):
        piece = text[sent : sent + 4]
        sent += len(piece)
        done = sent == len(text)
        completion = CompletionOutput(0, text[:sent], [], finish if done else None, None, piece)
        updates.append(RequestOutput("r", None, [1], [completion], done))
    return updates


def dialect(thinking: bool, tools: bool) -> ChatDialect:
    body = ChatCompletionRequest(
        messages=[{"role": "user", "content": "q"}],
        tools=[{"type": "function", "function": {"name": "get_weather"}}] if tools else None,
    )
    reader = ChoiceReader.factory(thinking, False, ToolUse.of(body))
    return ChatDialect(Tokenizer.byte_level(), "m", body, False, reader)


def test_dialect_whole_and_streamed_answers_agree() -> None:
    text = (
        '<think>hmm</think>\n\nChecking.<tool_call>{"name": "get_weather", "arguments": {"c": 1}}</tool_call>'
    )
    updates = outputs(text)
    whole = dialect(True, True).whole([updates[-1]]).model_dump()["choices"][0]
    message = whole["message"]
    assert whole["finish_reason"] == "tool_calls"
    assert (message["reasoning_content"], message["reasoning"], message["content"]) == (
        "hmm",
        "hmm",
        "Checking.",
    )
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"c": 1}
    stream = dialect(True, True)
    deltas = [
        choice
        for u in updates
        for chunk in stream.update(0, u, u.outputs[0])
        for choice in chunk.model_dump()["choices"]
    ]
    joined = {k: "".join(d["delta"].get(k) or "" for d in deltas) for k in ("content", "reasoning_content")}
    assert joined == {"content": "Checking.", "reasoning_content": "hmm"}
    arguments = "".join(
        t["function"].get("arguments", "") for d in deltas for t in d["delta"].get("tool_calls") or []
    )
    assert json.loads(arguments) == {"c": 1}
    assert deltas[-1]["finish_reason"] == "tool_calls"


def test_dialect_without_thinking_or_tools_leaves_text_alone() -> None:
    text = "<think>not parsed</think> <tool_call>{}</tool_call>"
    message = dialect(False, False).whole([outputs(text)[-1]]).model_dump()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": text}


def test_tools_and_earlier_calls_reach_the_template_as_objects() -> None:
    """The template sees the tools, and an earlier call's arguments as an object (Qwen's templates apply
    `tojson` to them: a JSON string would come out quoted twice)."""
    tokenizer = Tokenizer.byte_level()
    tokenizer.hf.chat_template = (
        "{% for t in tools or [] %}[tool {{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<call {{ c.function.name }} {{ c.function.arguments | tojson }}>{% endfor %}"
        "{% if m.tool_call_id %}(answers {{ m.tool_call_id }}){% endif %}{% endfor %}"
    )
    body = ChatCompletionRequest(
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "5C"},
        ],
        tools=[{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    )
    text = tokenizer.apply_chat_template(
        template_messages(body.messages), **ToolUse.of(body).template_kwargs()
    )
    assert text == '[tool w]<user>weather?<assistant><call w {"city": "Oslo"}><tool>5C(answers c1)'
    body.tool_choice = "none"
    assert "[tool" not in tokenizer.apply_chat_template(
        template_messages(body.messages), **ToolUse.of(body).template_kwargs()
    )
