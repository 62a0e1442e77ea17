"""`tokenmill judge-sim` on a CPU with a tiny model and a short question file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenmill.eval.judge_sim import dockerfile_env

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "official_test.txt"


def tokenmill(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def judge_sim(*args: str) -> tuple[int, dict, str]:
    result = tokenmill("judge-sim", "--data", str(DATA), *args)
    return result.returncode, json.loads(result.stdout), result.stderr


def broken_model(folder: Path) -> Path:
    """A model directory whose config.json is not JSON: the server exits at once when loading it."""
    (folder / "broken-model").mkdir()
    (folder / "broken-model" / "config.json").write_text("{not json")
    return folder / "broken-model"


def test_dockerfile_env_is_read_like_docker() -> None:
    env = dockerfile_env(ROOT / "Dockerfile")
    assert (
        env["TOKENMILL_MODEL"] == "/app/model"
        and env["HF_HUB_OFFLINE"] == "1"
        and env["BATCH_MODE"] == "true"
    )


@pytest.mark.slow
def test_judge_sim_passes_with_the_image_settings(tiny_model_dir, tmp_path: Path) -> None:
    settings = tmp_path / "best.env"
    settings.write_text("# from tune\nTOKENMILL_DEFAULT_MAX_TOKENS=8\nTOKENMILL_MAX_NUM_SEQS=64\n")
    code, report, stderr = judge_sim("--model", str(tiny_model_dir("qwen3")), "--device", "cpu", "--limit", "12",
                                     "--env-file", str(settings), "--threshold", "0", "--log", str(tmp_path / "log"))  # fmt: skip
    assert code == 0, stderr
    assert report["passed"] and report["healthy_within_limit"] and report["answered_within_limit"]
    assert report["items"] == 12 and report["missing"] == 0 and report["speed"] > 0
    assert report["peak_host_memory_gib"] > 0
    env = report["environment"]
    assert (
        env["HF_HUB_OFFLINE"] == "1"
        and env["TOKENMILL_DEFAULT_MAX_TOKENS"] == "8"
        and env["BATCH_MODE"] == "true"
    )
    assert "ready: serving" in (tmp_path / "log").read_text()


@pytest.mark.slow
def test_judge_sim_fails_on_accuracy(tiny_model_dir) -> None:
    code, report, stderr = judge_sim("--model", str(tiny_model_dir("qwen3")), "--device", "cpu", "--limit", "4",
                                     "--threshold", "0.99")  # fmt: skip
    assert (
        code == 1 and report["answered_within_limit"] and not report["accurate_enough"] and "FAIL" in stderr
    )


@pytest.mark.slow
def test_judge_sim_outside_the_image_asks_for_a_model_at_once(tmp_path: Path) -> None:
    """No --model: the Dockerfile's /app/model does not exist here. Also no --data nor --dockerfile, run
    from elsewhere: the shipped files are found relative to the repository, not the working directory."""
    started = time.monotonic()
    result = tokenmill("judge-sim", "--limit", "2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["items"] == 2 and not report["passed"]
    assert "/app/model" in report["failure"] and "does not exist on this machine" in report["failure"]
    assert "--model" in report["failure"]
    assert time.monotonic() - started < 60  # not the 420 s health limit


@pytest.mark.slow
def test_judge_sim_fails_at_once_with_the_log_when_the_server_dies(tmp_path: Path) -> None:
    broken = broken_model(tmp_path)
    started = time.monotonic()
    code, report, _ = judge_sim("--model", str(broken), "--device", "cpu", "--limit", "2")
    assert time.monotonic() - started < 90  # the health limit is 420 s
    assert code == 1 and not report["passed"]
    assert "the server exited with status" in report["failure"]
    assert f"{broken / 'config.json'}: not valid JSON" in report["failure"]  # from the server's log tail


@pytest.mark.slow
def test_warmup_runs_the_judges_batch_shape_from_a_file(tiny_model_dir) -> None:
    from tests.helpers.server_process import ServerProcess

    process = ServerProcess("--model", str(tiny_model_dir("qwen3")), "--warmup-file", str(DATA),
                            "--warmup-prompts", "24", "--max-num-seqs", "32").wait_ready()  # fmt: skip
    try:
        assert "warm-up of 24 requests" in process.log()
        assert (
            process.metric("tokenmill:prompt_tokens_total") > 24 * 20
        )  # real questions in the chat template
    finally:
        process.stop()


@pytest.mark.slow
def test_tune_fails_at_once_with_the_log_when_the_server_dies(tmp_path: Path) -> None:
    broken = broken_model(tmp_path)
    started = time.monotonic()
    result = tokenmill("tune", "--data", str(DATA), "--limit", "2", "--model", str(broken), "--device", "cpu",
                       "--out-dir", str(tmp_path / "tune"))  # fmt: skip
    assert time.monotonic() - started < 90
    assert result.returncode == 2
    assert "the server exited with status" in result.stderr
    assert f"{broken / 'config.json'}: not valid JSON" in result.stderr
