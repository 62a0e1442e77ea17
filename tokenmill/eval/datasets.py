"""Readers of the judge's QA files. Each item is a question with its reference answer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_QUESTION = re.compile(r"^（(\d+)\.\s*问题：(.*)$")
_ANSWER = re.compile(r"^答案：(.*)$")


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    reference: str


def read_question_file(path: str | Path) -> list[QAItem]:
    """The judge's question-file format: `（N. 问题：…` then `答案：…`, the answer possibly several lines."""
    items: list[QAItem] = []
    number: str | None = None
    question = ""
    answer_lines: list[str] | None = None
    line_no = 0

    def flush(line_no: int) -> None:
        if number is None:
            return
        if answer_lines is None:
            raise ValueError(f"{path}:{line_no}: question {number} has no '答案：' line")
        items.append(QAItem(number, question.strip(), "\n".join(answer_lines).strip()))

    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if match := _QUESTION.match(line):
            flush(line_no)
            number, question, answer_lines = match.group(1), match.group(2), None
        elif match := _ANSWER.match(line):
            if number is None:
                raise ValueError(f"{path}:{line_no}: an answer comes before any question")
            answer_lines = [match.group(1)]
        elif answer_lines is not None:
            answer_lines.append(line)
        elif number is not None:
            question += "\n" + line
        elif line.strip():
            raise ValueError(f"{path}:{line_no}: expected a line starting with '（N. 问题：'")
    flush(line_no + 1)
    if not items:
        raise ValueError(f"{path}: no questions found")
    return items
