"""The judge's two numbers, computed the judge's way, plus what users need beside them.

Accuracy: for each item, `jieba.lcut` reference and answer, join the words with spaces, take the
ROUGE-L F-measure of `rouge_score`'s `RougeScorer(["rougeL"], use_stemmer=False)` with
`score(reference, prediction)`; the mean over items; a missing answer scores as "". That scorer's
tokenizer keeps only `[a-z0-9]` runs, so Chinese drops out: the CJK-aware score keeps every jieba word,
so users can see what the judge ignores. Speed: Σ len(answer) / Σ seconds of the POST /predict calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jieba
from rouge_score import rouge_scorer

jieba.setLogLevel(logging.WARNING)

_JUDGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


class _WordTokenizer:
    """rouge_score tokenizer that keeps the jieba words as they are (Chinese included)."""

    def tokenize(self, text: str) -> list[str]:
        return [word for word in text.split(" ") if word.strip()]


_CJK = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_WordTokenizer())


def _words(text: str) -> str:
    return " ".join(jieba.lcut(text))


def judge_score(reference: str, prediction: str | None) -> float:
    """The judge's per-item accuracy."""
    return _JUDGE.score(_words(reference), _words(prediction or ""))["rougeL"].fmeasure


def cjk_score(reference: str, prediction: str | None) -> float:
    """ROUGE-L F over all jieba words, Chinese included."""
    return _CJK.score(_words(reference), _words(prediction or ""))["rougeL"].fmeasure


@dataclass
class Scores:
    accuracy: float  # the judge's number
    cjk_accuracy: float
    per_item: list[tuple[float, float]]  # (judge, cjk) per item


def score_all(references: list[str], predictions: list[str | None]) -> Scores:
    per_item = [(judge_score(r, p), cjk_score(r, p)) for r, p in zip(references, predictions)]
    count = max(len(per_item), 1)
    return Scores(
        accuracy=sum(j for j, _ in per_item) / count,
        cjk_accuracy=sum(c for _, c in per_item) / count,
        per_item=per_item,
    )


def judge_speed(answers: list[str | None], post_seconds: float) -> float:
    """Characters per second, the judge's 'tokens/s': Python string length over the POST time."""
    return sum(len(a or "") for a in answers) / post_seconds if post_seconds > 0 else 0.0
