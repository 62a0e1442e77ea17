"""Quantized models end to end: checkpoints written in the FP8 on-disk layout, weight-only int8 at load,
greedy decoding token-exact with transformers on the dequantized twin, and the stated distance from the
float model the quantized one came from."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.quantized_models import save_awq_checkpoint, save_fp8_checkpoint, save_gptq_checkpoint
from tests.test_correctness import hf_greedy
from tests.test_quantization import awq_unpacked, awq_weight, gptq_weight
from tokenmill import LLM, SamplingParams
from tokenmill.models.loader import check_model_directory, load_model
from tokenmill.quantization import UnquantizedMethod
from tokenmill.quantization.fp8 import Fp8BlockMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod, quantize_int8_per_channel

BLOCK = (32, 32)  # the tiny models' fused shards are multiples of 32, not of 128
GROUP = 32  # AWQ group of input rows (the tiny models' input sizes are 64 and 128)
PROMPTS = [[random.Random(n).randrange(3, 256) for _ in range(n)] for n in (3, 17, 40, 64)]


@pytest.fixture(scope="module")
def fp8_dir(tiny_model_dir, tmp_path_factory):
    return save_fp8_checkpoint(tiny_model_dir("qwen3"), tmp_path_factory.mktemp("qwen3-fp8"), BLOCK)


def test_fp8_checkpoint_layout(tiny_model_dir, fp8_dir) -> None:
    source, written = (
        load_file(tiny_model_dir("qwen3") / "model.safetensors"),
        load_file(fp8_dir / "model.safetensors"),
    )
    down = written["model.layers.1.mlp.down_proj.weight"]
    assert down.dtype == torch.float8_e4m3fn and down.shape == (64, 128)
    scale_inv = written["model.layers.1.mlp.down_proj.weight_scale_inv"]
    assert scale_inv.shape == (2, 4)  # [ceil(64/32), ceil(128/32)]
    original = source["model.layers.1.mlp.down_proj.weight"]
    assert scale_inv[1, 2] == original[32:64, 64:96].abs().max() / 448
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert torch.equal(written[name], source[name])
    config = json.loads((fp8_dir / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "fp8" and config["weight_block_size"] == [32, 32]


@pytest.fixture(scope="module")
def awq_dir(tiny_model_dir, tmp_path_factory):
    return save_awq_checkpoint(tiny_model_dir("qwen3"), tmp_path_factory.mktemp("qwen3-awq"), GROUP)


def _dequantized_twin(quantized_dir: Path, directory: Path, gptq_bits: int = 4) -> Path:
    """A float checkpoint holding exactly the weights the quantized one stands for (transformers reads it)."""
    shutil.copytree(quantized_dir, directory)
    tensors = load_file(quantized_dir / "model.safetensors")
    for name in [n for n in tensors if n.endswith(".weight_scale_inv")]:
        weight_name = name.removesuffix("_scale_inv")
        scales = tensors.pop(name).repeat_interleave(BLOCK[0], 0).repeat_interleave(BLOCK[1], 1)
        weight = tensors[weight_name]
        tensors[weight_name] = weight.float() * scales[: weight.shape[0], : weight.shape[1]]
    for name in [n for n in tensors if n.endswith(".g_idx")]:
        module = name.removesuffix(".g_idx")
        parts = {part: tensors.pop(f"{module}.{part}") for part in ("qweight", "qzeros", "scales", "g_idx")}
        tensors[f"{module}.weight"] = gptq_weight(parts, gptq_bits).contiguous()
    for name in [n for n in tensors if n.endswith(".qweight")]:
        module = name.removesuffix(".qweight")
        parts = [tensors.pop(f"{module}.{part}") for part in ("qweight", "qzeros", "scales")]
        tensors[f"{module}.weight"] = awq_weight(*parts).contiguous()
    save_file(tensors, directory / "model.safetensors")
    config = json.loads((directory / "config.json").read_text())
    del config["quantization_config"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _greedy(model: str | Path, logprobs: bool = False, **engine_args):
    llm = LLM(model=str(model), device="cpu", **engine_args)
    params = SamplingParams(temperature=0, max_tokens=24, logprobs=0 if logprobs else None)
    return [output.outputs[0] for output in llm.generate(PROMPTS, params)]


@pytest.mark.slow
def test_fp8_checkpoint_decodes_token_exact_with_its_dequantized_twin(fp8_dir, tmp_path) -> None:
    expected = hf_greedy(_dequantized_twin(fp8_dir, tmp_path / "twin"), PROMPTS)
    assert [list(output.token_ids) for output in _greedy(fp8_dir)] == expected


def test_awq_checkpoint_layout(tiny_model_dir, awq_dir) -> None:
    written = load_file(awq_dir / "model.safetensors")
    prefix = "model.layers.0.mlp.gate_proj"
    assert f"{prefix}.weight" not in written
    qweight, qzeros, scales = (written[f"{prefix}.{part}"] for part in ("qweight", "qzeros", "scales"))
    assert (qweight.dtype, qweight.shape) == (torch.int32, (64, 16))  # [in, out/8]
    assert (qzeros.dtype, qzeros.shape) == (torch.int32, (2, 16))  # [in/G, out/8]
    assert (scales.dtype, scales.shape) == (torch.float16, (2, 128))  # [in/G, out]
    original = load_file(tiny_model_dir("qwen3") / "model.safetensors")[f"{prefix}.weight"]
    assert (awq_weight(qweight, qzeros, scales) - original).abs().max() <= scales.max() * 0.52
    assert awq_unpacked(qweight).max() <= 15


@pytest.mark.slow
def test_awq_checkpoint_decodes_token_exact_with_its_dequantized_twin(awq_dir, tmp_path) -> None:
    expected = hf_greedy(_dequantized_twin(awq_dir, tmp_path / "twin"), PROMPTS)
    assert [list(output.token_ids) for output in _greedy(awq_dir)] == expected


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "group_size", "act_order"), [(4, 32, True), (8, -1, False)])
def test_gptq_checkpoint_decodes_token_exact_with_its_dequantized_twin(
    tiny_model_dir, tmp_path, bits: int, group_size: int, act_order: bool
) -> None:
    directory = save_gptq_checkpoint(tiny_model_dir("qwen2"), tmp_path / "m", bits, group_size, act_order)
    config = json.loads((directory / "config.json").read_text())["quantization_config"]
    assert config["desc_act"] == act_order and config["bits"] == bits
    expected = hf_greedy(_dequantized_twin(directory, tmp_path / "twin", bits), PROMPTS)
    assert [list(output.token_ids) for output in _greedy(directory)] == expected


@pytest.mark.slow
def test_int8_at_load_decodes_token_exact_with_its_dequantized_twin(tiny_model_dir, tmp_path) -> None:
    twin = shutil.copytree(tiny_model_dir("qwen2"), tmp_path / "twin")  # qwen2: q/k/v biases too
    tensors = load_file(twin / "model.safetensors")
    for name, weight in tensors.items():
        if name.endswith("_proj.weight") and ".layers." in name:
            quantized, scale = quantize_int8_per_channel(weight)
            tensors[name] = quantized.float() * scale[:, None]
    save_file(tensors, twin / "model.safetensors")
    got = _greedy(tiny_model_dir("qwen2"), quantization="int8")
    assert [list(output.token_ids) for output in got] == hf_greedy(twin, PROMPTS)


def _distance(reference, quantized) -> tuple[float, float]:
    """(share of greedy tokens equal before the first divergence, mean |logprob difference| there)."""
    same, errors = 0, []
    for ref, out in zip(reference, quantized):
        for i, (a, b) in enumerate(zip(ref.token_ids, out.token_ids)):
            if a != b:
                break
            same += 1
            errors.append(abs(ref.logprobs[i][a] - out.logprobs[i][b]))
    return same / sum(len(ref.token_ids) for ref in reference), sum(errors) / len(errors)


# Measured on the tiny qwen3 (random weights of std 0.2, so top-1 margins are small and greedy paths part
# early): share of greedy tokens before the first divergence, mean |logprob difference| over them.
MEASURED = {"fp8": (0.60, 0.100), "int8": (0.92, 0.026), "awq": (0.61, 0.286)}


@pytest.mark.slow
def test_quantized_models_stay_close_to_their_float_model(tiny_model_dir, fp8_dir, awq_dir) -> None:
    reference = _greedy(tiny_model_dir("qwen3"), logprobs=True)
    quantized = {
        "fp8": _greedy(fp8_dir, logprobs=True),
        "int8": _greedy(tiny_model_dir("qwen3"), True, quantization="int8"),
        "awq": _greedy(awq_dir, logprobs=True),
    }
    for kind, outputs in quantized.items():
        agreement, error = _distance(reference, outputs)
        measured_agreement, measured_error = MEASURED[kind]
        assert agreement >= measured_agreement - 0.2 and error <= 1.5 * measured_error, (
            kind,
            agreement,
            error,
        )


def test_random_presets_quantize_at_load() -> None:
    cpu = torch.device("cpu")
    plain = load_model("random:qwen3-tiny", cpu, torch.float32, None).model
    int8 = load_model("random:qwen3-tiny", cpu, torch.float32, None, quantization="int8").model
    layer, plain_layer = int8.layers[0].mlp.gate_up_proj, plain.layers[0].mlp.gate_up_proj
    assert isinstance(layer.method, Int8WeightOnlyMethod) and layer.weight.dtype == torch.int8
    restored = layer.weight.float() * layer.weight_scale[:, None]
    assert (restored - plain_layer.weight).abs().max() <= layer.weight_scale.max() / 2 + 1e-7  # same draws
    assert torch.equal(int8.embed_tokens.weight, plain.embed_tokens.weight)


def test_modules_to_not_convert_stay_float(tiny_model_dir, tmp_path) -> None:
    directory = save_fp8_checkpoint(
        tiny_model_dir("qwen3"), tmp_path / "m", BLOCK, not_convert=["mlp.down_proj"]
    )
    model = load_model(str(directory), torch.device("cpu"), torch.float32, None).model
    assert isinstance(model.layers[0].mlp.down_proj.method, UnquantizedMethod)
    assert isinstance(model.layers[0].mlp.gate_up_proj.method, Fp8BlockMethod)
    assert model.layers[0].mlp.gate_up_proj.weight.dtype == torch.float8_e4m3fn


def _edit(directory: Path, config_change=None, drop_tensor: str | None = None) -> Path:
    if config_change:
        config = json.loads((directory / "config.json").read_text())
        config["quantization_config"].update(config_change)
        (directory / "config.json").write_text(json.dumps(config))
    if drop_tensor:
        tensors = load_file(directory / "model.safetensors")
        del tensors[drop_tensor]
        save_file(tensors, directory / "model.safetensors")
    return directory


def test_check_model_reads_fp8_checkpoints_and_names_what_is_wrong(fp8_dir, tmp_path) -> None:
    assert check_model_directory(fp8_dir) == []
    unknown = _edit(shutil.copytree(fp8_dir, tmp_path / "a"), {"quant_method": "mxfp4"})
    [problem] = check_model_directory(unknown)
    assert "config.json" in problem and "quant_method 'mxfp4' is not supported" in problem
    bad_block = _edit(shutil.copytree(fp8_dir, tmp_path / "b"), {"weight_block_size": [48, 32]})
    [problem] = check_model_directory(bad_block)
    assert "weight_block_size [48, 32]" in problem and "multiples of 48" in problem
    missing = _edit(
        shutil.copytree(fp8_dir, tmp_path / "c"),
        drop_tensor="model.layers.0.self_attn.k_proj.weight_scale_inv",
    )
    [problem] = check_model_directory(missing)
    assert "missing 1 tensors" in problem and "layers.0.self_attn.qkv_proj.weight_scale_inv#1" in problem
    with pytest.raises(ValueError, match="missing 1 tensors"):
        load_model(str(missing), torch.device("cpu"), torch.float32, None)


def test_check_model_accepts_packed_int4_checkpoints(awq_dir, tiny_model_dir, tmp_path) -> None:
    assert check_model_directory(awq_dir) == []
    gptq = save_gptq_checkpoint(tiny_model_dir("qwen2"), tmp_path / "gptq", 4, 32, act_order=True)
    assert check_model_directory(gptq) == []
    wrong = _edit(
        shutil.copytree(gptq, tmp_path / "w"), {"quant_method": "awq", "zero_point": True, "version": "gemm"}
    )
    [problem] = check_model_directory(wrong)
    assert "g_idx" in problem and "has no place" in problem


def test_check_model_command_names_the_file_and_field(fp8_dir, tmp_path, capsys) -> None:
    from tokenmill.cli import main

    assert main(["check-model", str(fp8_dir)]) == 0
    broken = _edit(shutil.copytree(fp8_dir, tmp_path / "m"), {"weight_block_size": [128, 128, 128]})
    assert main(["check-model", str(broken)]) == 1
    error = capsys.readouterr().err
    assert str(broken / "config.json") in error and "quantization_config.weight_block_size must be" in error


def test_a_float8_checkpoint_without_its_config_is_refused(fp8_dir, tmp_path) -> None:
    directory = shutil.copytree(fp8_dir, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    del config["quantization_config"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="is a quantized tensor but the model is not quantized"):
        load_model(str(directory), torch.device("cpu"), torch.float32, None)
