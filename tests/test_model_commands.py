"""`tokenmill download` against a local stand-in for the hub, and `tokenmill check-model` on good and
broken model directories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.helpers.fake_hub import serve_repository

pytestmark = pytest.mark.slow  # every test runs the CLI in a subprocess


def tokenmill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir("llama"), tmp_path / "model"))


def test_check_model_accepts_a_good_directory(model_copy: Path) -> None:
    result = tokenmill("check-model", str(model_copy))
    assert result.returncode == 0 and "loads" in result.stdout


def _break_config(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (path / "config.json").write_text(json.dumps(config))


def _drop_tensor(path: Path) -> None:
    tensors = load_file(path / "model.safetensors")
    tensors.pop(next(name for name in tensors if "down_proj" in name))
    save_file(tensors, path / "model.safetensors")


def _resize_hidden(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 96
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: (p / "config.json").unlink(), "has no config.json"),
        (_break_config, "GPT2LMHeadModel"),
        (lambda p: (p / "model.safetensors").unlink(), "no *.safetensors"),
        (_drop_tensor, "missing 1 tensors"),
        (_resize_hidden, "checkpoint shape"),
        (lambda p: [(p / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")], "tokenizer"),
    ],
)
def test_check_model_names_what_is_broken(model_copy: Path, damage, message: str) -> None:
    damage(model_copy)
    result = tokenmill("check-model", str(model_copy))
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_download_from_a_local_hub_resumes_and_verifies(tiny_model_dir, tmp_path: Path) -> None:
    source = tiny_model_dir("qwen3")
    server, asked = serve_repository("acme/tiny-qwen3", {p.name: p for p in source.iterdir()})
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    target = tmp_path / "downloaded"
    try:
        args = ["download", "acme/tiny-qwen3", "--source", "huggingface", "--revision", "v1", "--dir", str(target),
                "--endpoint", endpoint]  # fmt: skip
        first = tokenmill(*args)
        assert first.returncode == 0, first.stderr
        assert (target / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
        assert any("/revision/v1" in path for path in asked)
        fetched = sum("model.safetensors" in path for path in asked)
        again = tokenmill(*args)  # files already present are not fetched again
        assert again.returncode == 0
        assert sum("model.safetensors" in path and "resolve" in path for path in asked) <= fetched + 1
        generated = tokenmill(
            "generate", "--model", str(target), "--device", "cpu", "--raw", "--max-tokens", "3", "hi"
        )
        assert generated.returncode == 0, generated.stderr
    finally:
        server.shutdown()


def test_download_fails_the_build_when_the_model_cannot_be_served(tiny_model_dir, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_model_dir("llama"), tmp_path / "broken"))
    _break_config(broken)
    server, _ = serve_repository("acme/broken", {p.name: p for p in broken.iterdir()})
    try:
        result = tokenmill("download", "acme/broken", "--source", "huggingface", "--dir", str(tmp_path / "out"),
                           "--endpoint", f"http://127.0.0.1:{server.server_address[1]}")  # fmt: skip
    finally:
        server.shutdown()
    assert (
        result.returncode == 2 and "cannot be served" in result.stderr and "GPT2LMHeadModel" in result.stderr
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["download", "x/y", "--dir", "d", "--source", "ftp"], "invalid choice"),
        (["download", "x/y"], "--dir"),
        (["check-model"], "directory"),
    ],
)
def test_argument_errors(args: list[str], message: str) -> None:
    result = tokenmill(*args)
    assert result.returncode == 2 and message in result.stderr
