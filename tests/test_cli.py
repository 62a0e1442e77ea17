"""`python -m tokenmill generate` as a user runs it: a real process."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_generate_prints_an_answer_from_the_default_model() -> None:
    result = run("generate", "--device", "cpu", "--max-tokens", "24", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "tok/s" in result.stderr


@pytest.mark.slow
def test_generate_on_a_directory_with_engine_flags(tiny_model_dir) -> None:
    result = run(
        "generate",
        "--model",
        str(tiny_model_dir("qwen3")),
        "--device",
        "cpu",
        "--raw",
        "--block-size",
        "4",
        "--no-enable-prefix-caching",
        "--max-tokens",
        "5",
        "hello",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[[1-5] tokens in", result.stderr)


@pytest.mark.slow
def test_bad_arguments_fail_clearly(tmp_path) -> None:
    result = run("generate", "--max-num-seqs", "0", "x")
    assert result.returncode == 2 and "max_num_seqs" in result.stderr
    result = run("generate", "--model", str(tmp_path / "nowhere"), "x")
    assert result.returncode == 2 and "neither a directory" in result.stderr
    result = run("generate", "--dtype", "int3", "x")
    assert result.returncode == 2 and "--dtype" in result.stderr


def test_readme_documents_every_server_setting() -> None:
    from pathlib import Path

    from tokenmill.config import EngineConfig, ServerConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ServerConfig.model_fields:
        documented = f"`--{name.replace('_', '-')}`" in readme or f"`{name}`" in readme
        assert documented, f"README does not document the setting {name}"
    for name in EngineConfig.model_fields:
        assert f"`{name}`" in readme, name
