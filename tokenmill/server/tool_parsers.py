"""Tool calls out of generated text, whole or streamed: Hermes tags, and the shapes forced calls take.

Every parser is incremental (`feed` each new piece of text, then `finish`), and a whole answer is one
feed, so streamed and whole answers hold the same calls. Each returns the content it lets through and
`ToolCallDelta`s: a call's first delta has its id and name, later ones add argument text, and the
arguments of a call, joined, are its JSON arguments.

- `HermesToolParser` (`tool_choice` auto): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
  as Qwen2.5/Qwen3 templates ask for; text before the first call is content; tags split across chunks
  are held back until whole; a call that does not parse stays text.
- `NamedCallParser` (a named `tool_choice`): the whole output is that function's arguments (a grammar
  made it so), streamed as it comes.
- `RequiredCallsParser` (`required`): the output is a JSON array of {"name", "parameters"}, parsed once
  it is complete.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from tokenmill.server.reasoning import held_tail

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"
_NAME_FIRST = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')
_decoder = json.JSONDecoder()


@dataclass
class ToolCallDelta:
    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


Parsed = tuple[str, list[ToolCallDelta]]  # content, and tool call deltas


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def arguments_text(arguments: object) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


class HermesToolParser:
    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self._calls = 0  # calls completed or under way
        self._named = False  # the call under way has sent its id and name
        self._args_start = 0  # where its arguments begin in the buffer
        self._args_sent = 0  # characters of them already sent

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        content, deltas = "", []
        while True:
            if not self._in_call:
                start = self._buffer.find(CALL_START)
                if start < 0:
                    keep = held_tail(self._buffer, CALL_START)
                    content += self._content(self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return content, deltas
                content += self._content(self._buffer[:start])
                self._buffer = self._buffer[start + len(CALL_START) :]
                self._in_call, self._named = True, False
            end = self._buffer.find(CALL_END)
            if end < 0:
                deltas += self._stream_call()
                return content, deltas
            body, self._buffer = self._buffer[:end], self._buffer[end + len(CALL_END) :]
            parsed, text_back = self._close_call(body)
            deltas += parsed
            content += self._content(text_back)
            self._in_call = False

    def finish(self) -> Parsed:
        """An unclosed call that parses anyway counts (a model may stop before the end tag)."""
        if not self._in_call:
            content, self._buffer = self._content(self._buffer), ""
            return content, []
        body, self._buffer, self._in_call = self._buffer, "", False
        deltas, text_back = self._close_call(body)
        return self._content(text_back), deltas

    @property
    def called(self) -> bool:
        return self._calls > 0

    def _content(self, text: str) -> str:
        return "" if self._calls else text  # only text before the first call is the answer's content

    def _stream_call(self) -> list[ToolCallDelta]:
        """The name once it is complete, then the arguments as far as they have come."""
        deltas = []
        if not self._named:
            match = _NAME_FIRST.match(self._buffer)
            if match is None:
                return []
            self._named, self._args_start, self._args_sent = True, match.end(), 0
            deltas.append(ToolCallDelta(self._calls, "", new_call_id(), json.loads(match.group(1))))
            self._calls += 1
        self._skip_blank(self._buffer)
        if self._args_start == len(self._buffer):
            return deltas
        try:
            end = _decoder.raw_decode(self._buffer, self._args_start)[1]
        except (ValueError, RecursionError):  # incomplete, or nested deeper than Python's stack
            end = len(self._buffer) - held_tail(self._buffer, CALL_END)
        fragment = self._buffer[self._args_start + self._args_sent : end]
        if fragment:
            self._args_sent += len(fragment)
            deltas.append(ToolCallDelta(self._calls - 1, fragment))
        return deltas

    def _skip_blank(self, text: str) -> None:
        """Until some are sent, the arguments begin at their first non-blank character."""
        if not self._args_sent:
            self._args_start = len(text) - len(text[self._args_start :].lstrip())

    def _close_call(self, body: str) -> tuple[list[ToolCallDelta], str]:
        """The rest of a call whose end is known, or its text back if nothing of it was sent and it
        does not parse."""
        if self._named:
            self._skip_blank(body)
            try:
                end = _decoder.raw_decode(body, self._args_start)[1]
            except (ValueError, RecursionError):
                return [], ""
            rest = body[self._args_start + self._args_sent : end]
            return ([ToolCallDelta(self._calls - 1, rest)] if rest else []), ""
        try:
            call = json.loads(body)
            name, arguments = call["name"], call.get("arguments", call.get("parameters", {}))
        except (ValueError, TypeError, KeyError, RecursionError):
            return [], CALL_START + body + CALL_END
        if not isinstance(name, str):
            return [], CALL_START + body + CALL_END
        self._calls += 1
        return [ToolCallDelta(self._calls - 1, arguments_text(arguments), new_call_id(), name)], ""


class NamedCallParser:
    def __init__(self, name: str) -> None:
        self.name = name
        self.called = False

    def feed(self, text: str) -> Parsed:
        if self.called:
            return "", [ToolCallDelta(0, text)] if text else []
        self.called = True
        return "", [ToolCallDelta(0, text, new_call_id(), self.name)]

    def finish(self) -> Parsed:
        return self.feed("") if not self.called else ("", [])


class RequiredCallsParser:
    def __init__(self) -> None:
        self._text = ""
        self.called = False

    def feed(self, text: str) -> Parsed:
        self._text += text
        return "", []

    def finish(self) -> Parsed:
        try:
            calls = json.loads(self._text)
            deltas = [
                ToolCallDelta(i, arguments_text(call.get("parameters", {})), new_call_id(), call["name"])
                for i, call in enumerate(calls)
            ]
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return self._text, []  # cut short by max_tokens: the text as it is
        self.called = bool(deltas)
        return "", deltas
