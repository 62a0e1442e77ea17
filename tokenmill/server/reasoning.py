"""Qwen3 thinking: the text inside <think>...</think> is reasoning, the rest is the answer.

One incremental splitter serves whole answers and streams alike (a whole answer is one feed), so both
split the same way; tags cut across stream chunks are held back until they are whole. An answer that
ends before `</think>` is all reasoning. Whether the output starts inside the block depends on the
prompt: templates that open `<think>` themselves (Qwen3-2507 thinking models) leave only the end tag
to the model.
"""

from __future__ import annotations

THINK_START = "<think>"
THINK_END = "</think>"


def held_tail(text: str, tag: str) -> int:
    """How many trailing characters of `text` could be the start of `tag` (and so must wait)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningSplitter:
    def __init__(self, starts_inside: bool) -> None:
        self.inside = starts_inside
        self.at_start = not starts_inside  # nothing seen yet: an opening <think> may still come
        self._trim = True  # drop the whitespace that opens the output and follows each tag
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) pieces for the next piece of output text."""
        text, self._held = self._held + text, ""
        reasoning = content = ""
        while text:
            if self._trim:
                text = text.lstrip()
                if not text:
                    break
                self._trim = False
            if self.at_start:
                if text.startswith(THINK_START):
                    self.inside, self.at_start, self._trim = True, False, True
                    text = text[len(THINK_START) :]
                    continue
                if THINK_START.startswith(text):
                    self._held = text
                    break
                self.at_start = False
            if not self.inside:
                content += text
                break
            end = text.find(THINK_END)
            if end >= 0:
                reasoning += text[:end]
                self.inside, self._trim = False, True
                text = text[end + len(THINK_END) :]
                continue
            keep = held_tail(text, THINK_END)
            reasoning += text[: len(text) - keep]
            self._held = text[len(text) - keep :]
            break
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What was held back, once the output has ended."""
        held, self._held = self._held, ""
        return (held, "") if self.inside else ("", held)


def opens_thinking(prompt_text: str) -> bool:
    """Whether the prompt leaves the model inside a <think> block (the template opened it)."""
    return prompt_text.rstrip().endswith(THINK_START)
