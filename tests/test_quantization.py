"""Quantization formats, unit level: packing and scales against independent formulas, each quantized
linear against its dequantized reference, fused shards, and clear errors for configs we cannot read."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmill.quantization import QuantLinear, UnquantizedMethod, resolve_quantization
from tokenmill.quantization.fp8 import Fp8BlockMethod, quantize_fp8_blocks
from tokenmill.quantization.int8 import Int8WeightOnlyMethod, quantize_int8_per_channel

E4M3_MAX = 448.0


def test_fp8_blocks_match_a_tile_by_tile_formula() -> None:
    weight = torch.randn(70, 50, generator=torch.Generator().manual_seed(0)) * 3
    quantized, scale_inv = quantize_fp8_blocks(weight, (32, 16))
    assert quantized.dtype == torch.float8_e4m3fn and quantized.shape == (70, 50)
    assert scale_inv.dtype == torch.float32 and scale_inv.shape == (3, 4)  # ceil(70/32), ceil(50/16)
    for i in range(3):
        for j in range(4):
            tile = weight[i * 32 : (i + 1) * 32, j * 16 : (j + 1) * 16]
            expected_scale = tile.abs().max() / E4M3_MAX
            assert scale_inv[i, j] == expected_scale
            expected = (tile / expected_scale).to(torch.float8_e4m3fn)
            got = quantized[i * 32 : (i + 1) * 32, j * 16 : (j + 1) * 16]
            assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))
    # e4m3 keeps 3 mantissa bits: round-to-nearest is within 1/16 of the value (plus the subnormal step)
    scales = scale_inv.repeat_interleave(32, 0)[:70].repeat_interleave(16, 1)[:, :50]
    restored = quantized.float() * scales
    assert ((restored - weight).abs() <= weight.abs() / 16 + scales * 2**-9).all()


def test_int8_per_channel_matches_a_row_by_row_formula() -> None:
    weight = torch.randn(12, 40, generator=torch.Generator().manual_seed(1))
    quantized, scale = quantize_int8_per_channel(weight)
    assert quantized.dtype == torch.int8 and scale.shape == (12,)
    for row in range(12):
        expected_scale = weight[row].abs().max() / 127
        assert scale[row] == expected_scale
        assert torch.equal(quantized[row], torch.round(weight[row] / expected_scale).to(torch.int8))
    assert ((quantized.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-7).all()


def _dequantized(layer: QuantLinear) -> torch.Tensor:
    """The float weight a quantized layer stands for, by the formats' own definitions."""
    if isinstance(layer.method, Int8WeightOnlyMethod):
        return layer.weight.float() * layer.weight_scale[:, None]
    if isinstance(layer.method, Fp8BlockMethod):
        bo, bi = layer.method.block
        scales = layer.weight_scale_inv.repeat_interleave(bo, 0).repeat_interleave(bi, 1)
        return layer.weight.float() * scales[: layer.out_features, : layer.in_features]
    return layer.weight.float()


METHODS = {
    "none": UnquantizedMethod,
    "int8": Int8WeightOnlyMethod,
    "fp8": lambda: Fp8BlockMethod((32, 32), checkpoint_is_fp8=False),
}


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_fused_shards_load_like_the_whole_matrix_and_apply_equals_the_reference(kind: str) -> None:
    shards = [64, 32, 32]
    weight = torch.randn(128, 48, generator=torch.Generator().manual_seed(2)) * 0.05
    bias = torch.randn(128, generator=torch.Generator().manual_seed(3))
    whole = QuantLinear(48, shards, True, METHODS[kind]())
    whole.load("weight", weight, None)
    whole.load("bias", bias, None)
    sharded = QuantLinear(48, shards, True, METHODS[kind]())
    for index, rows in enumerate(weight.split(shards)):
        sharded.load("weight", rows, index)
        sharded.load("bias", bias.split(shards)[index], index)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), sharded.state_dict().values()))
    x = torch.randn(5, 48, generator=torch.Generator().manual_seed(4))
    reference = x @ _dequantized(whole).T + bias
    torch.testing.assert_close(whole(x), reference, rtol=1e-5, atol=1e-5)
    error = (whole(x) - F.linear(x, weight, bias)).abs().max().item()
    assert error < {"none": 1e-6, "int8": 0.01, "fp8": 0.05}[kind]


def test_int8_runs_in_bfloat16_activations() -> None:
    layer = QuantLinear(64, [32], False, Int8WeightOnlyMethod())
    weight = torch.randn(32, 64) * 0.05
    layer.load("weight", weight, None)
    x = torch.randn(3, 64)
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), x @ _dequantized(layer).T, rtol=0.02, atol=0.02)


def test_fp8_tiles_may_not_straddle_fused_shards() -> None:
    with pytest.raises(ValueError, match=r"weight_block_size \[32, 32\].*multiples of 32"):
        QuantLinear(64, [48, 16], False, Fp8BlockMethod((32, 32), checkpoint_is_fp8=True))


def test_float8_tensors_are_refused_by_an_unquantized_layer() -> None:
    layer = QuantLinear(16, [16], False, UnquantizedMethod())
    with pytest.raises(ValueError, match="quantization_config missing"):
        layer.load("weight", torch.zeros(16, 16, dtype=torch.float8_e4m3fn), None)


FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}


def test_fp8_checkpoint_config_is_read() -> None:
    config = resolve_quantization(None, {**FP8, "modules_to_not_convert": ["mlp.down_proj"]}, "m/config.json")
    assert config is not None and config.weight_block_size == (128, 128) and config.checkpoint_quantized
    assert isinstance(config.method_for(["model.layers.0.mlp.down_proj"]), UnquantizedMethod)
    assert isinstance(config.method_for(["model.layers.0.self_attn.o_proj"]), Fp8BlockMethod)
    with pytest.raises(ValueError, match="only some of the fused"):
        resolve_quantization(None, {**FP8, "modules_to_not_convert": ["q_proj"]}, "c").method_for(
            ["layers.0.q_proj", "layers.0.k_proj"]
        )


def test_flags_without_a_quantized_checkpoint() -> None:
    assert resolve_quantization(None, None, "c") is None
    int8 = resolve_quantization("int8", None, "c")
    assert int8 is not None and isinstance(int8.method_for(["x"]), Int8WeightOnlyMethod)
    fp8 = resolve_quantization("fp8", None, "c")
    assert fp8 is not None and fp8.weight_block_size == (128, 128) and not fp8.checkpoint_quantized


@pytest.mark.parametrize(
    ("checkpoint", "requested", "message"),
    [
        (
            {"quant_method": "bitsandbytes"},
            None,
            r"quant_method 'bitsandbytes' is not supported \(supported: fp8",
        ),
        ({"quant_method": "awq", "bits": 4}, None, "quant_method 'awq' is not supported yet"),
        ({}, None, "quant_method None is not supported"),
        ({**FP8, "weight_block_size": [128]}, None, "weight_block_size must be two positive integers"),
        ({**FP8, "weight_block_size": [0, 128]}, None, "weight_block_size must be two positive integers"),
        ({**FP8, "weight_block_size": "128"}, None, "weight_block_size must be two positive integers"),
        ({**FP8, "weight_block_size": None}, None, "per-tensor FP8 checkpoints are not supported yet"),
        ({**FP8, "fmt": "e5m2"}, None, "fmt 'e5m2' is not supported"),
        ({**FP8, "activation_scheme": "static"}, None, "only dynamic"),
        ({**FP8, "modules_to_not_convert": "lm_head"}, None, "modules_to_not_convert must be a list"),
        (FP8, "int8", "holds a fp8 checkpoint: --quantization int8 cannot apply"),
        ([1], None, "quantization_config must be an object"),
    ],
)
def test_unreadable_configs_name_the_file_and_the_field(checkpoint, requested, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        resolve_quantization(requested, checkpoint, "/models/x/config.json")
    assert "/models/x/config.json" in str(error.value)
