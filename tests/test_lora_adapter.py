"""PEFT adapter directories: what loads, how it is scaled, and a clear error for everything else."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tokenmill import LLM, SamplingParams
from tokenmill.engine.sequence import Sequence
from tokenmill.lora.adapter import read_adapter

HIDDEN, INTERMEDIATE, LAYERS = 64, 128, 2  # tests/helpers/tiny_models.py
PREFIX = "base_model.model.model.layers"


def write_adapter(
    directory: Path, rank: int = 4, targets: tuple[str, ...] = ("q_proj", "down_proj"), **config
) -> Path:
    """A hand-written PEFT directory for the tiny models (q_proj: 64 -> 128 for qwen3's head_dim 32)."""
    directory.mkdir(parents=True, exist_ok=True)
    shapes = {"q_proj": (HIDDEN, 128), "down_proj": (INTERMEDIATE, HIDDEN), "up_proj": (HIDDEN, INTERMEDIATE)}
    tensors = {}
    for layer in range(LAYERS):
        for module in targets:
            group = "mlp" if module.endswith(("down_proj", "up_proj")) else "self_attn"
            fan_in, fan_out = shapes[module]
            tensors[f"{PREFIX}.{layer}.{group}.{module}.lora_A.weight"] = torch.randn(rank, fan_in)
            tensors[f"{PREFIX}.{layer}.{group}.{module}.lora_B.weight"] = torch.randn(fan_out, rank)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    content = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(targets),
        **config,
    }
    (directory / "adapter_config.json").write_text(json.dumps(content))
    return directory


def test_scaling_is_alpha_over_rank_or_over_its_root_with_rslora(tmp_path: Path) -> None:
    plain = read_adapter("a", write_adapter(tmp_path / "a", rank=4), max_rank=16)
    rs = read_adapter("b", write_adapter(tmp_path / "b", rank=4, use_rslora=True), max_rank=16)
    assert (plain.rank, plain.scaling, rs.scaling) == (4, 2.0, 8 / math.sqrt(4))
    assert sorted(plain.weights) == [(0, "down_proj"), (0, "q_proj"), (1, "down_proj"), (1, "q_proj")]
    assert plain.uid != rs.uid


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(r=32), "r is 32, above max_lora_rank 16"),
        (
            dict(target_modules=["q_proj", "embed_tokens"]),
            r"target_modules \['embed_tokens'\] are not supported",
        ),
        (dict(modules_to_save=["lm_head"]), "modules_to_save is set"),
        (dict(use_dora=True), "DoRA is not supported"),
        (dict(rank_pattern={"q_proj": 8}), "per-module ranks"),
        (dict(bias="all"), "bias is 'all'"),
        (dict(peft_type="IA3"), "only LORA adapters"),
        (dict(lora_alpha="big"), "lora_alpha must be a number"),
    ],
)
def test_unsupported_configs_are_refused_by_name(tmp_path: Path, config: dict, message: str) -> None:
    directory = write_adapter(tmp_path / "a")
    content = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**content, **config}))
    with pytest.raises(ValueError, match=message):
        read_adapter("a", directory, max_rank=16)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_adapter("a", tmp_path / "nowhere", 16)
    directory = write_adapter(tmp_path / "a")
    (directory / "adapter_model.safetensors").rename(directory / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match=r"no adapter_model\.safetensors.*never loaded"):
        read_adapter("a", directory, 16)
    (directory / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no adapter_config\.json"):
        read_adapter("a", directory, 16)


def test_bad_tensors_are_named(tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a")
    weights = directory / "adapter_model.safetensors"
    save_file({f"{PREFIX}.0.self_attn.q_proj.lora_A.weight": torch.randn(3, HIDDEN),
               f"{PREFIX}.0.self_attn.q_proj.lora_B.weight": torch.randn(128, 3)}, str(weights))  # fmt: skip
    with pytest.raises(ValueError, match=r"do not have rank r=4"):
        read_adapter("a", directory, 16)
    save_file({f"{PREFIX}.0.self_attn.q_proj.lora_A.weight": torch.randn(4, HIDDEN)}, str(weights))
    with pytest.raises(ValueError, match=r"layers\.0\.q_proj has lora_B missing"):
        read_adapter("a", directory, 16)
    save_file({"base_model.model.lm_head.lora_A.weight": torch.randn(4, HIDDEN)}, str(weights))
    with pytest.raises(ValueError, match=r"lm_head\.lora_A\.weight' is not the LoRA A or B"):
        read_adapter("a", directory, 16)


@pytest.mark.parametrize(
    "content",
    [b"\x00" * 3, b"\xff" * 1000, b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}'],
    ids=["short", "garbage", "bad-header"],
)
def test_a_weights_file_that_is_not_safetensors_is_named(tmp_path: Path, content: bytes) -> None:
    directory = write_adapter(tmp_path / "a")
    (directory / "adapter_model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors: not a readable safetensors file"):
        read_adapter("a", directory, 16)


@pytest.fixture(scope="module")
def llm(tiny_model_dir) -> LLM:
    return LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True, max_loras=1)


def test_an_adapter_of_another_base_model_is_refused(llm: LLM, tmp_path: Path) -> None:
    directory = write_adapter(tmp_path / "a", targets=("up_proj",))
    weights = {f"{PREFIX}.0.mlp.up_proj.lora_A.weight": torch.randn(4, 96),
               f"{PREFIX}.0.mlp.up_proj.lora_B.weight": torch.randn(INTERMEDIATE, 4)}  # fmt: skip
    save_file(weights, str(directory / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=r"layers.0.up_proj has lora_A \(4, 96\).*another base model"):
        llm.engine.add_lora("other-base", str(directory))
    assert "other-base" not in llm.engine.lora.adapters


def test_a_slot_used_by_a_running_sequence_is_never_evicted(llm: LLM, tmp_path: Path) -> None:
    manager = llm.engine.lora
    first = manager.add("first", write_adapter(tmp_path / "first"))
    second = manager.add("second", write_adapter(tmp_path / "second"))

    def seq(adapter) -> Sequence:
        made = Sequence("r", 0, [1, 2], SamplingParams(), torch.device("cpu"))
        made.lora = adapter
        return made

    running = seq(first)
    assert manager.admitter([])(running) and manager.resident() == ["first"]
    assert not manager.admitter([running])(seq(second)), "one slot, pinned by a running sequence"
    assert manager.admitter([running])(seq(None)), "the base model needs no slot"
    waiting = seq(second)
    assert manager.admitter([])(waiting) and manager.resident() == ["second"]
    assert waiting.lora_slot == 0
    with pytest.raises(ValueError, match="in use by unfinished requests"):
        manager.remove("second", [waiting])


def test_random_bench_adapters_fit_the_model(llm: LLM, tmp_path: Path) -> None:
    from tokenmill.lora.random_adapters import write_random_adapters

    (request,) = write_random_adapters(llm.engine.model_config, tmp_path, count=1, rank=8)
    adapter = llm.engine.lora.add("bench-0", request.path)
    assert adapter.rank == 8 and len(adapter.weights) == 7 * LAYERS


def test_the_least_recently_used_unpinned_adapter_is_evicted(tiny_model_dir, tmp_path: Path) -> None:
    manager = LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True, max_loras=2).engine.lora
    first, second, third = (manager.add(n, write_adapter(tmp_path / n)) for n in ("first", "second", "third"))

    def admit(adapter) -> Sequence:
        seq = Sequence("r", 0, [1, 2], SamplingParams(), torch.device("cpu"))
        seq.lora = adapter
        assert manager.admitter([])(seq)
        return seq

    slot_of_first = admit(first).lora_slot
    admit(second)
    assert admit(first).lora_slot == slot_of_first  # resident: no reload, and now the most recent
    assert admit(third).lora_slot != slot_of_first  # so "second" made room
    assert manager.resident() == ["first", "third"]
