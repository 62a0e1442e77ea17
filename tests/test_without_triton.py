"""Where Triton is missing (CPU-only torch, macOS), tokenmill imports, loads and generates with the
PyTorch kernels, and asking for Triton kernels is a clear error. Run in a subprocess in which an import
hook makes `triton` unimportable, as it is on such installs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenmill import LLM, SamplingParams

HIDE_TRITON = """
import sys

class HideTriton:
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideTriton())
"""

GENERATE = """
import json
try:
    import triton
    hidden = False
except ImportError:
    hidden = True

from tokenmill import LLM, SamplingParams

llm = LLM(sys.argv[1], device="cpu")
out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=6), use_tqdm=False)
loaded = sorted(m for m in sys.modules if m == "triton" or m.startswith(("triton.", "tokenmill.kernels.triton")))
try:
    LLM(sys.argv[1], device="cpu", kernels="triton")
    error = None
except ValueError as exc:
    error = str(exc)
print(json.dumps({"hidden": hidden, "tokens": out[0].outputs[0].token_ids, "error": error, "loaded": loaded}))
"""


@pytest.mark.slow
def test_generates_on_cpu_with_triton_hidden(tiny_model_dir) -> None:
    model = str(tiny_model_dir("qwen3"))
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", HIDE_TRITON + GENERATE, model],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["hidden"]
    assert result["loaded"] == []  # the default (auto) path never imports triton or the Triton backend
    assert result["error"] is not None and "kernels='triton' needs the triton package" in result["error"]
    expected = LLM(model, device="cpu", kernels="torch").generate(
        [[5, 6, 7]], SamplingParams(temperature=0, max_tokens=6), use_tqdm=False
    )
    assert result["tokens"] == expected[0].outputs[0].token_ids
    assert len(result["tokens"]) == 6
