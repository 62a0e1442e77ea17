"""The offline benchmark's judge workload, its repeated, cold-start timing, and its weight bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tokenmill.bench.judge_workload import JUDGE_QUESTIONS, JudgeWorkload
from tokenmill.bench.offline import benchmark
from tokenmill.bench.workloads import Workload
from tokenmill.config import EngineConfig
from tokenmill.eval.datasets import read_question_file
from tokenmill.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_judge_workload_is_the_sample_file_through_the_chat_template() -> None:
    tokenizer = Tokenizer.byte_level()  # one token per UTF-8 byte, so lengths are checkable by hand
    items = read_question_file(ROOT / JUDGE_QUESTIONS)
    requests = JudgeWorkload("judge-358", str(ROOT / JUDGE_QUESTIONS)).requests(tokenizer)
    assert len(requests) == len(items) == 358
    for item, (prompt, output_len) in zip(items, requests):
        assert output_len == len(item.reference.encode("utf-8"))
        text = tokenizer.decode(prompt, skip_special_tokens=False)
        assert text.startswith("<|im_start|>user\n" + item.question)  # no system prompt by default
        assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_bench_judge_cold_start_repeats(tiny_model_dir, tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text(
        "（1. 问题：什么是warp？\n答案：32个线程。\n（2. 问题：SM是什么？\n答案：流式多处理器\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tokenmill", "bench", "--workload", "judge-358", "--data", str(questions),
         "--model", str(tiny_model_dir("qwen3")), "--device", "cpu", "--repeat", "3", "--cold-start",
         "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("judge-358-*.json")
    report = json.loads(path.read_text())
    assert report["num_prompts"] == 2 and report["cold_start"] is True
    assert report["output_tokens"] == len("32个线程。".encode()) + len("流式多处理器".encode())
    runs = report["runs_s"]
    assert len(runs) == 3 and report["wall_s"] == sorted(runs)[1]
    assert report["spread_s"] == pytest.approx(max(runs) - min(runs), abs=2e-3)
    assert report["compiles_in_timed_runs"] == [[], [], []]  # no Triton on the CPU


@pytest.mark.slow  # a fresh Python importing torch: 2.4 s
def test_bench_rejects_a_zero_repeat() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenmill", "bench", "--repeat", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--repeat: must be at least 1" in result.stderr


@pytest.mark.slow
def test_bench_structured_json_does_the_plain_runs_work(tiny_model_dir, tmp_path: Path) -> None:
    """Every request under the benchmark's schema still makes its full output length, and the result
    states grammar compile times."""
    result = subprocess.run(
        [sys.executable, "-m", "tokenmill", "bench", "--workload", "custom", "--num-prompts", "6",
         "--input-len", "8", "--output-len", "24", "--model", str(tiny_model_dir("qwen3")), "--device", "cpu",
         "--structured", "json", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("custom-structured-json-*.json")
    report = json.loads(path.read_text())
    assert report["structured"] == "json" and report["output_tokens"] == 6 * 24
    assert set(report["grammar_compile_ms"]) == {"tokenizer_info", "flat", "nested_refs", "workload"}
    assert all(ms > 0 for ms in report["grammar_compile_ms"].values())


@pytest.mark.slow
def test_bench_reports_the_quantization_and_its_weight_bytes(tmp_path: Path) -> None:
    """The bytes floor's weight term is what the quantized model stores (int8: about half of float32/4)."""
    workload = Workload("tiny", 1, (4, 4), (2, 2))
    reports = {}
    for quantization in (None, "int8"):
        config = EngineConfig(model="random:qwen3-tiny", device="cpu", quantization=quantization)
        reports[quantization] = benchmark(config, workload, [], "test", tmp_path)
    plain, int8 = reports[None], reports["int8"]
    assert plain.quantization == "none" and int8.quantization == "int8"
    assert 0.2 < int8.weight_bytes / plain.weight_bytes < 0.8  # projections at 1 byte instead of 4
    assert len(list(tmp_path.glob("tiny-qwen3-tiny-int8-*.json"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "tag"), [("--tensor-parallel-size", "tp2"), ("--data-parallel-size", "dp2")]
)
def test_bench_runs_tensor_and_data_parallel(flag: str, tag: str, tiny_model_dir, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenmill", "bench", "--workload", "custom", "--num-prompts", "6",
         "--input-len", "8", "--output-len", "8", "--model", str(tiny_model_dir("qwen3")), "--device", "cpu",
         flag, "2", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob(f"custom-*-{tag}-cpu-*.json")
    report = json.loads(path.read_text())
    assert report["output_tokens"] == 48 and report[flag[2:].replace("-", "_")] == 2
