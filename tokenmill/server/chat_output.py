"""One chat choice's text read as it grows: reasoning, answer content and tool calls, in that order.

The reasoning splitter (when thinking is on) takes the <think> block out first; the tool parser (when
tools are in use) reads calls out of what remains. A whole answer is read by the same reader in one
feed, so a streamed answer and a whole one always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.server.reasoning import ReasoningSplitter
from tokenmill.server.tool_parsers import ToolCallDelta
from tokenmill.server.tools import ToolParser, ToolUse


@dataclass
class MessageParts:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __iadd__(self, other: MessageParts) -> MessageParts:
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls += other.tool_calls
        return self

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)


class ChoiceReader:
    def __init__(self, splitter: ReasoningSplitter | None, tools: ToolParser | None) -> None:
        self.splitter = splitter
        self.tools = tools

    @classmethod
    def factory(cls, thinking: bool, starts_inside: bool, tool_use: ToolUse):
        """A maker of fresh readers, one per choice, for a request's settings."""
        return lambda: cls(ReasoningSplitter(starts_inside) if thinking else None, tool_use.parser())

    @property
    def reasons(self) -> bool:
        return self.splitter is not None

    @property
    def called(self) -> bool:
        return self.tools is not None and self.tools.called

    def feed(self, text: str) -> MessageParts:
        reasoning, content = self.splitter.feed(text) if self.splitter else ("", text)
        return self._with_tools(reasoning, content)

    def finish(self) -> MessageParts:
        reasoning, content = self.splitter.finish() if self.splitter else ("", "")
        parts = self._with_tools(reasoning, content)
        if self.tools is not None:
            content, calls = self.tools.finish()
            parts += MessageParts(content, "", calls)
        return parts

    def read_whole(self, text: str) -> MessageParts:
        parts = self.feed(text)
        parts += self.finish()
        return parts

    def _with_tools(self, reasoning: str, content: str) -> MessageParts:
        if self.tools is None:
            return MessageParts(content, reasoning)
        content, calls = self.tools.feed(content)
        return MessageParts(content, reasoning, calls)
