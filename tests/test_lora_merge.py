"""`tokenmill merge-lora`: the merged checkpoint's logits equal peft's `merge_and_unload`, and tokenmill
serves it like the adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers.lora_adapters import peft_greedy, peft_model, save_adapter
from tokenmill import LLM, SamplingParams
from tokenmill.cli import main

pytestmark = pytest.mark.slow  # peft models and a few engines

IDS = torch.tensor([[5, 17, 250, 42, 7, 99, 3, 130]])


@pytest.mark.parametrize(("arch", "rslora"), [("qwen3", False), ("qwen2", True)])
def test_merged_checkpoint_equals_peft_merge_and_unload(
    arch: str, rslora: bool, tiny_model_dir, tmp_path
) -> None:
    base = tiny_model_dir(arch)
    adapter = save_adapter(base, tmp_path / "adapter", seed=5, rank=8, alpha=32, use_rslora=rslora)
    assert main(["merge-lora", str(base), str(adapter), str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    expected = peft_model(base, adapter).merge_and_unload().eval()
    with torch.no_grad():
        got, want = merged(IDS).logits, expected(IDS).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(IDS).logits, want, atol=1e-3), "the adapter must change the logits"
    llm = LLM(str(tmp_path / "merged"), device="cpu")
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    tokens = llm.generate([IDS[0].tolist()], params, use_tqdm=False)[0].outputs[0].token_ids
    assert tokens == peft_greedy(base, adapter, [IDS[0].tolist()], 8)[0]


def test_merge_refuses_a_non_empty_output_and_another_base(tiny_model_dir, tmp_path: Path, capsys) -> None:
    adapter = save_adapter(tiny_model_dir("qwen3"), tmp_path / "adapter", seed=6, rank=4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["merge-lora", str(tiny_model_dir("qwen3")), str(adapter), str(tmp_path / "full")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["merge-lora", str(tiny_model_dir("llama")), str(adapter), str(tmp_path / "out")]) == 2
    assert "B·A is" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "no half-merged checkpoint is left behind"
