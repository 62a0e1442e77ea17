from __future__ import annotations

import os

# Triton kernels run on the CPU through Triton's interpreter, so CI tests them against their references.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import pytest
import torch

from tests.helpers.tiny_models import save_tiny_model

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Returns a function: architecture name -> directory of a tiny random HF checkpoint (cached)."""
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny_model(arch, tmp_path_factory.mktemp(arch))
        return made[arch]

    return get


@pytest.fixture(scope="session")
def default_llm():
    """The embedded default model (SmolLM2-135M-Instruct GGUF), loaded once for the session."""
    from tokenmill import LLM

    return LLM(device="cpu", max_num_seqs=32)


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    """One real server on the tiny Qwen3 checkpoint, shared by the HTTP tests that do not stop it."""
    from tests.helpers.server_process import ServerProcess

    process = ServerProcess(
        "--model",
        str(tiny_model_dir("qwen3")),
        "--max-input-tokens",
        "400",
        "--max-dec-len",
        "256",
        "--max-queued-requests",
        "1000",
    ).wait_ready()
    yield process
    process.stop()
