"""Readers of the judge's QA files. Each item is a question with its reference answer.

Formats: the judge's question file (`（N. 问题：…` / `答案：…`), Word files with `问题：` / `答案：`
paragraphs, JSONL chat rows (`{"messages": [user, assistant]}`), and JSONL `{"id", "prompt", "reference"}`.
A malformed file fails with the file and line (or paragraph) named.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

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


_WORD = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING = re.compile(r"^(第.{1,6}章|[一二三四五六七八九十]+、|#)")


def read_docx(path: str | Path) -> list[QAItem]:
    """Paragraphs `问题：…` then `答案：…` (answers may run over several paragraphs; headings between
    sections are skipped)."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = ElementTree.fromstring(archive.read("word/document.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise ValueError(f"{path}: not a readable .docx file ({exc})") from exc
    paragraphs = ["".join(t.text or "" for t in p.iter(f"{_WORD}t")).strip() for p in root.iter(f"{_WORD}p")]
    items: list[QAItem] = []
    question: str | None = None
    answer: list[str] | None = None
    for number, text in enumerate(paragraphs, start=1):
        if text.startswith("问题："):
            if question is not None:
                _close(items, path, number, question, answer)
            question, answer = text.removeprefix("问题：").strip(), None
        elif text.startswith("答案："):
            if question is None:
                raise ValueError(f"{path}: paragraph {number}: an answer comes before any question")
            answer = [text.removeprefix("答案：").strip()]
        elif text and answer is not None and not _HEADING.match(text):
            answer.append(text)
    if question is not None:
        _close(items, path, len(paragraphs), question, answer)
    if not items:
        raise ValueError(f"{path}: no '问题：' paragraphs found")
    return items


def _close(
    items: list[QAItem], path: str | Path, where: int, question: str, answer: list[str] | None
) -> None:
    if answer is None:
        raise ValueError(f"{path}: paragraph {where}: question {question[:30]!r} has no '答案：'")
    items.append(QAItem(str(len(items) + 1), question, "\n".join(answer).strip()))


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a line that is not JSON fails, named."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc


def read_jsonl(path: str | Path) -> list[QAItem]:
    """Chat rows `{"messages": [..., user, assistant]}` or `{"id", "prompt", "reference"}` rows."""
    items: list[QAItem] = []
    for number, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        if "messages" in row:
            messages = row["messages"]
            users = [
                m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"
            ]
            answers = [
                m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"
            ]
            if not users or not answers:
                raise ValueError(f"{path}:{number}: messages need a user and an assistant turn")
            items.append(QAItem(str(row.get("id", number)), users[-1], answers[-1]))
        elif "prompt" in row and "reference" in row:
            if not isinstance(row["prompt"], str) or not isinstance(row["reference"], str):
                raise ValueError(f"{path}:{number}: prompt and reference must be strings")
            items.append(QAItem(str(row.get("id", number)), row["prompt"], row["reference"]))
        else:
            raise ValueError(f"{path}:{number}: expected 'messages' or 'prompt' and 'reference'")
    if not items:
        raise ValueError(f"{path}: no rows")
    return items


def load_items(path: str | Path) -> list[QAItem]:
    """Any of the supported formats, chosen by the file's extension (.docx, .jsonl, else a question file)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    if suffix == ".docx":
        return read_docx(path)
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    return read_question_file(path)
