"""`python -m tokenmill eval`: talk to a server exactly as the judge does, and score it the judge's way.

The judge polls `GET /` until it answers; on `{"status":"batch"}` it sends every question in one
`POST /predict`, otherwise one request per question. Only the POST calls are timed.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from tokenmill.eval.datasets import QAItem, jsonl_rows, read_jsonl
from tokenmill.eval.scoring import judge_speed, score_all


@dataclass
class EvalReport:
    url: str
    data: str
    items: int
    mode: str  # "batch" or "single"
    health_wait_s: float
    runs: list[dict[str, float]] = field(default_factory=list)  # per repeat: post_seconds, chars, speed
    speed: float = 0.0  # the judge's number: characters per second of POST time (mean over repeats)
    accuracy: float = 0.0  # the judge's number: mean ROUGE-L F over jieba words (English words only)
    cjk_accuracy: float = 0.0
    threshold: float = 0.35
    passed: bool = False
    missing: int = 0
    output_tokens: int | None = None
    output_tokens_per_s: float | None = None


@dataclass
class JudgeOptions:
    """How the judge's procedure runs: `repeat` times, `concurrency` requests in flight in single mode,
    within its health and /predict limits. `overrides` (tokenmill's optional /predict fields) go into batch
    requests, for the tuner; the judge sends none."""

    repeat: int = 1
    concurrency: int = 1
    threshold: float = 0.35
    health_timeout: float = 420.0
    predict_timeout: float = 360.0
    overrides: dict[str, Any] | None = None


def wait_healthy(
    client: httpx.Client, timeout: float, check_server: Callable[[], None] | None = None
) -> tuple[str, float]:
    """Poll `GET /` like the judge until it answers 200; returns its status and the seconds waited.
    `check_server` is called between polls and raises when a server we started has died."""
    started = time.monotonic()
    while True:
        if check_server is not None:
            check_server()
        try:
            response = client.get("/", timeout=max(timeout - (time.monotonic() - started), 1.0))
            if response.status_code == 200:
                return response.json().get("status", "ok"), time.monotonic() - started
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{client.base_url} did not become healthy within {timeout:.0f}s")
        time.sleep(0.5)


def predict_batch(
    client: httpx.Client, questions: list[str], timeout: float, overrides: dict[str, Any] | None = None
) -> tuple[list[str | None], float]:
    started = time.perf_counter()
    response = client.post("/predict", json={"prompt": questions, **(overrides or {})}, timeout=timeout)
    elapsed = time.perf_counter() - started
    answers = response.json().get("response") if response.status_code == 200 else None
    if not isinstance(answers, list) or len(answers) != len(questions):
        return [None] * len(questions), elapsed
    return [a if isinstance(a, str) else None for a in answers], elapsed


def predict_single(
    client: httpx.Client, questions: list[str], timeout: float, concurrency: int
) -> tuple[list[str | None], float]:
    """One request per question; the POST time is the sum of every call's duration, as the judge sums."""

    def ask(question: str) -> tuple[str | None, float]:
        started = time.perf_counter()
        try:
            response = client.post("/predict", json={"prompt": question}, timeout=timeout)
            answer = response.json().get("response") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            answer = None
        return (answer if isinstance(answer, str) else None), time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(max(concurrency, 1)) as pool:
        results = list(tqdm(pool.map(ask, questions), total=len(questions), desc="predict", leave=False))
    return [a for a, _ in results], sum(t for _, t in results)


def count_tokens(client: httpx.Client, answers: list[str | None]) -> int | None:
    """Output tokens by the server's own tokenizer (`POST /tokenize`, as tokenmill and vLLM offer)."""
    total = 0
    for answer in answers:
        if not answer:
            continue
        response = client.post("/tokenize", json={"prompt": answer, "add_special_tokens": False}, timeout=60)
        if response.status_code != 200:
            return None
        total += response.json()["count"]
    return total


def evaluate(
    url: str,
    items: list[QAItem],
    data_name: str,
    options: JudgeOptions | None = None,
    check_server: Callable[[], None] | None = None,
) -> tuple[EvalReport, list[dict[str, Any]]]:
    """Run the judge's procedure `options.repeat` times; score the last run's answers."""
    options = options or JudgeOptions()
    repeat, predict_timeout, threshold = options.repeat, options.predict_timeout, options.threshold
    questions = [item.question for item in items]
    with httpx.Client(base_url=url, timeout=predict_timeout) as client:
        status, waited = wait_healthy(client, options.health_timeout, check_server)
        report = EvalReport(url, data_name, len(items), "batch" if status == "batch" else "single", waited)
        answers: list[str | None] = []
        for _ in tqdm(range(repeat), desc="eval", disable=repeat == 1):
            if report.mode == "batch":
                answers, seconds = predict_batch(client, questions, predict_timeout, options.overrides)
            else:
                answers, seconds = predict_single(client, questions, predict_timeout, options.concurrency)
            chars = sum(len(a or "") for a in answers)
            report.runs.append(
                {
                    "post_seconds": round(seconds, 4),
                    "chars": chars,
                    "speed": round(judge_speed(answers, seconds), 1),
                }
            )
        report.output_tokens = count_tokens(client, answers)
    scores = score_all([item.reference for item in items], answers)
    report.speed = round(sum(r["speed"] for r in report.runs) / len(report.runs), 1)
    report.accuracy = round(scores.accuracy, 4)
    report.cjk_accuracy = round(scores.cjk_accuracy, 4)
    report.threshold = threshold
    report.passed = scores.accuracy >= threshold
    report.missing = sum(1 for a in answers if a is None)
    if report.output_tokens is not None:
        post = report.runs[-1]["post_seconds"]
        report.output_tokens_per_s = round(report.output_tokens / post, 1) if post > 0 else None
    per_item = [
        {"id": item.id, "question": item.question, "reference": item.reference, "answer": answer,
         "judge_score": round(judge, 4), "cjk_score": round(cjk, 4),
         "answer_chars": len(answer or ""), "reference_chars": len(item.reference)}
        for item, answer, (judge, cjk) in zip(items, answers, scores.per_item)
    ]  # fmt: skip
    return report, per_item


def write_outputs(report: EvalReport, per_item: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """report.json, items.jsonl and two plots: the score histogram and answer length against score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "items.jsonl", out_dir / "scores.png", out_dir / "length.png"]
    paths[0].write_text(json.dumps(asdict(report), ensure_ascii=False, indent=2) + "\n")
    paths[1].write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in per_item))
    judge = [row["judge_score"] for row in per_item]
    cjk = [row["cjk_score"] for row in per_item]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([judge, cjk], bins=20, range=(0, 1), label=["judge (English words)", "CJK-aware"])
    ax.axvline(report.threshold, color="red", linestyle="--", label=f"pass mark {report.threshold}")
    ax.set_xlabel("ROUGE-L F")
    ax.set_ylabel("items")
    ax.set_title(f"accuracy {report.accuracy:.3f} (CJK-aware {report.cjk_accuracy:.3f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([row["answer_chars"] for row in per_item], judge, s=8)
    ax.set_xlabel("answer length (characters)")
    ax.set_ylabel("judge score")
    ax.set_title(f"speed {report.speed:,.0f} chars/s")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=110)
    plt.close("all")
    return paths


def score_files(refs: Path, preds: Path) -> dict[str, Any]:
    """Score predictions offline: refs `{"id","prompt","reference"}`, preds `{"id","response"}`;
    a reference without a prediction counts as ""."""
    references = read_jsonl(refs)
    answers: dict[str, str] = {}
    for number, row in jsonl_rows(preds):
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("response"), str):
            raise ValueError(f"{preds}:{number}: expected {{'id': ..., 'response': str}}")
        answers[str(row["id"])] = row["response"]
    predictions = [answers.get(item.id) for item in references]
    scores = score_all([item.reference for item in references], predictions)
    return {
        "accuracy": round(scores.accuracy, 6),
        "cjk_accuracy": round(scores.cjk_accuracy, 6),
        "chars": sum(len(p or "") for p in predictions),
        "items": len(references),
        "missing": sum(1 for p in predictions if p is None),
    }
