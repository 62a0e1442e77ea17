"""Judge-exact evaluation, the online benchmark and the tuner, against real server processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.server_process import ServerProcess
from tokenmill.eval.datasets import load_items, read_question_file
from tokenmill.eval.scoring import cjk_score, judge_score, judge_speed, score_all

DATA = Path(__file__).resolve().parents[1] / "data"


def tokenmill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "name,count,unique", [("official_test.txt", 358, 92), ("basic.docx", 100, 100), ("plus.docx", 92, 92),
                          ("data.jsonl", 7370, 7370)],
)  # fmt: skip
def test_parsers_read_the_shared_data(name: str, count: int, unique: int) -> None:
    items = load_items(DATA / name)
    assert len(items) == count
    assert len({(i.question, i.reference) for i in items}) == unique
    assert all(i.question and i.reference for i in items)


def test_multi_line_answers_and_repeats() -> None:
    items = read_question_file(DATA / "official_test.txt")
    assert all(items[i].question == items[i % 92].question for i in range(358))
    plus = load_items(DATA / "plus.docx")
    assert any("\n" in item.reference for item in plus)  # answers that run over several paragraphs


@pytest.mark.parametrize(
    "content,suffix,message",
    [
        ("答案：先有答案\n（1. 问题：后有问题\n", ".txt", ":1: an answer comes before any question"),
        ("（1. 问题：没有答案\n（2. 问题：也没有\n答案：有\n", ".txt", "question 1 has no '答案：'"),
        ('{"prompt": "a", "reference": "b"}\n{not json}\n', ".jsonl", ":2: not JSON"),
        ('{"prompt": "a"}\n', ".jsonl", ":1: expected 'messages' or 'prompt' and 'reference'"),
        ("not a zip", ".docx", "not a readable .docx"),
        ("", ".txt", "no questions found"),
    ],
)
def test_malformed_files_name_the_place(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_items(path)


def test_judge_scoring_hand_checked() -> None:
    assert judge_score("shared memory tiling", "shared memory tiling") == 1.0
    assert judge_score("并行计算很重要", "并行计算很重要") == 0.0  # the judge's scorer drops Chinese
    assert cjk_score("并行计算很重要", "并行计算很重要") == 1.0
    assert judge_score("a b c d", "a b x d") == pytest.approx(0.75)  # LCS 3 of 4 both ways
    code = "Mds[ty][tx] = M[Row*Width + ph*TILE_WIDTH + tx];"
    assert judge_score(code, code) == 1.0
    assert judge_score(code, None) == 0.0 == judge_score(code, "")
    assert judge_score("使用 shared memory 做 tiling", "tiling 依赖 shared memory") == pytest.approx(2 / 3)
    scores = score_all(["abc def", "并行"], ["abc def", None])
    assert scores.accuracy == pytest.approx(0.5) and scores.per_item[1] == (0.0, 0.0)
    assert judge_speed(["ab", None, "中文"], 2.0) == 2.0


@pytest.mark.slow
def test_eval_score_command(tmp_path: Path) -> None:
    refs = tmp_path / "refs.jsonl"
    preds = tmp_path / "preds.jsonl"
    refs.write_text("".join(json.dumps({"id": i, "prompt": "q", "reference": r}) + "\n"
                            for i, r in enumerate(["cuda kernel launch", "共享内存", "warp divergence"])))  # fmt: skip
    preds.write_text(json.dumps({"id": 0, "response": "cuda kernel launch"}) + "\n"
                     + json.dumps({"id": 1, "response": "共享内存"}) + "\n")  # fmt: skip
    result = tokenmill("eval", "score", "--refs", str(refs), "--preds", str(preds), "--json")
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["items"] == 3 and scored["missing"] == 1 and scored["chars"] == 22
    assert scored["accuracy"] == pytest.approx(1 / 3)
    bad = tokenmill("eval", "score", "--refs", str(refs), "--preds", str(refs))
    assert bad.returncode == 2 and "expected {'id'" in bad.stderr


@pytest.mark.slow
def test_eval_batch_mode_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = tokenmill("eval", "--url", server.url, "--data", str(DATA / "official_test.txt"), "--limit", "40",
                       "--repeat", "2", "--out-dir", str(out), "--threshold", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "batch" and report["items"] == 40 and len(report["runs"]) == 2
    assert report["speed"] > 0 and report["missing"] == 0 and report["passed"]
    assert report["output_tokens"] > 0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert (
        len(rows) == 40 and {"question", "reference", "answer", "judge_score", "cjk_score"} <= rows[0].keys()
    )
    assert report["runs"][-1]["chars"] == sum(row["answer_chars"] for row in rows)
    assert (out / "scores.png").stat().st_size > 5000 and (out / "length.png").stat().st_size > 5000


@pytest.mark.slow
def test_eval_single_mode_end_to_end(tiny_model_dir, tmp_path: Path) -> None:
    process = ServerProcess("--model", str(tiny_model_dir("qwen2")), "--no-batch-mode",
                            "--default-max-tokens", "8").wait_ready()  # fmt: skip
    try:
        result = tokenmill("eval", "--url", process.url, "--data", str(DATA / "basic.docx"), "--limit", "12",
                           "--concurrency", "4", "--out-dir", str(tmp_path))  # fmt: skip
        report = json.loads(result.stdout)
        assert report["mode"] == "single" and report["items"] == 12 and report["missing"] == 0
        assert result.returncode == (0 if report["passed"] else 1)
    finally:
        process.stop()


@pytest.mark.slow
def test_bench_serve_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    result = tokenmill("bench", "serve", "--url", server.url, "--num-prompts", "24", "--input-len", "20",
                       "--output-len", "12", "--max-concurrency", "8", "--out-dir", str(tmp_path),
                       "--slo-ttft-ms", "60000", "--slo-tpot-ms", "60000")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["completed"] == 24 and report["failed"] == 0
    assert report["output_tokens_per_s"] > 0 and report["goodput"] > 0
    assert report["ttft_ms"]["p50"] > 0 and report["itl_ms"]["p99"] >= report["itl_ms"]["p50"]
    assert (tmp_path / "serve-latency.png").exists()
    poisson = tokenmill("bench", "serve", "--url", server.url, "--data", str(DATA / "plus.docx"), "--num-prompts",
                        "10", "--request-rate", "20", "--output-len", "8", "--no-save")  # fmt: skip
    assert poisson.returncode == 0 and json.loads(poisson.stdout)["completed"] == 10


@pytest.mark.slow
def test_tune_two_trials(tiny_model_dir, tmp_path: Path) -> None:
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps({"id": i, "prompt": f"question {i}", "reference": "some answer"}) + "\n"
                                 for i in range(6)))  # fmt: skip
    result = tokenmill("tune", "--data", str(questions), "--model", str(tiny_model_dir("qwen3")), "--device", "cpu",
                       "--max-new-tokens", "4,16", "--batch-sizes", "8,16", "--trials", "2", "--threshold", "0",
                       "--margin", "0", "--out-dir", str(tmp_path / "tune"), "--port", "8799")  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert len(trials) == 2 and all(t["feasible"] for t in trials)
    assert trials[1]["settings"]["max_new_tokens"] == 16  # the second trial moved one knob
    env = (tmp_path / "tune" / "best.env").read_text()
    assert "TOKENMILL_DEFAULT_MAX_TOKENS=" in env and "TOKENMILL_MAX_NUM_SEQS=8" in env
