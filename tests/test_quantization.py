"""Quantization formats, unit level: packing and scales against independent formulas, each quantized
linear against its dequantized reference, fused shards, and clear errors for configs we cannot read."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmill.quantization import QuantLinear, UnquantizedMethod, gptq, resolve_quantization
from tokenmill.quantization.awq import AwqMethod, pack_awq, quantize_awq, unpack_awq
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod, quantize_fp8_blocks
from tokenmill.quantization.gptq import GptqMethod, pack_sequential, quantize_gptq
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


AWQ_NIBBLE_COLUMNS = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's pack order: nibble i <- column order[i]


def awq_unpacked(packed: torch.Tensor) -> torch.Tensor:
    """int32 [rows, cols/8] -> [rows, cols], nibble by nibble, written from AutoAWQ's packing loop."""
    rows, words = packed.shape
    out = torch.empty(rows, words * 8, dtype=torch.int64)
    for i, column in enumerate(AWQ_NIBBLE_COLUMNS):
        out[:, column::8] = (packed.to(torch.int64) >> (4 * i)) & 0xF
    return out


def awq_weight(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[out, in] float weight of AWQ tensors: (q - zero) * scale per group of input rows."""
    group = qweight.shape[0] // scales.shape[0]
    zeros = awq_unpacked(qzeros).repeat_interleave(group, 0)
    return ((awq_unpacked(qweight) - zeros) * scales.float().repeat_interleave(group, 0)).T


def test_awq_packing_matches_autoawq_order() -> None:
    values = torch.randint(0, 16, (5, 24), generator=torch.Generator().manual_seed(5))
    packed = pack_awq(values)
    assert packed.dtype == torch.int32 and packed.shape == (5, 3)
    for row in range(5):
        for word in range(3):
            expected = sum(
                int(values[row, 8 * word + c]) << (4 * i) for i, c in enumerate(AWQ_NIBBLE_COLUMNS)
            )
            assert int(packed[row, word]) & 0xFFFFFFFF == expected
    assert torch.equal(awq_unpacked(packed), values) and torch.equal(
        unpack_awq(packed), values.to(torch.int32)
    )


def test_awq_quantization_matches_the_group_formula() -> None:
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(6))  # [out, in]
    qweight, qzeros, scales = quantize_awq(weight, 32)
    assert qweight.shape == (64, 2) and qzeros.shape == (2, 2) and scales.shape == (2, 16)
    assert scales.dtype == torch.float16
    group = weight[3, 32:64]  # output column 3, second group of inputs
    scale = (group.max().clamp(min=0) - group.min().clamp(max=0)) / 15
    assert scales[1, 3] == scale.half()
    zero = torch.round(-group.min() / scale)
    assert awq_unpacked(qzeros)[1, 3] == zero
    assert torch.equal(
        awq_unpacked(qweight)[32:64, 3], (torch.round(group / scale) + zero).clamp(0, 15).long()
    )
    step = scales.float().repeat_interleave(32, 0).T
    assert ((awq_weight(qweight, qzeros, scales) - weight).abs() <= step * (0.5 + 16 * 2**-10)).all()


def test_awq_checkpoint_shards_repacked_at_load_dequantize_exactly_as_awq_defines_them() -> None:
    """q|k|v-like shards in AWQ's layout load into GPTQ's (values along the input rows, zero points as
    they are, g_idx the row order); the layer's weight is bit for bit the AutoAWQ-order dequantization
    of the checkpoint tensors, including zero points of 0 (an all-positive group), which GPTQ v1's
    zero - 1 could not hold."""
    generator = torch.Generator().manual_seed(8)
    shards = [torch.randn(16, 64, generator=generator), torch.rand(24, 64, generator=generator)]
    layer = QuantLinear(64, [16, 24], False, AwqMethod(32, checkpoint_is_awq=True))
    expected = []
    for index, weight in enumerate(shards):
        parts = dict(zip(("qweight", "qzeros", "scales"), quantize_awq(weight, 32)))
        for name, tensor in parts.items():
            layer.load(name, tensor, index)
        expected.append(awq_weight(parts["qweight"], parts["qzeros"], parts["scales"]))
    assert (awq_unpacked(quantize_awq(shards[1], 32)[1]) == 0).all()
    assert layer.qweight.shape == (8, 40) and layer.qzeros.shape == (2, 5)
    assert torch.equal(layer.g_idx, torch.arange(64, dtype=torch.int32) // 32)
    parts = {name: getattr(layer, name) for name in ("qweight", "qzeros", "scales", "g_idx")}
    assert torch.equal(gptq_weight(parts, 4, zero_offset=0), torch.cat(expected))
    x = torch.randn(3, 64, generator=generator)
    torch.testing.assert_close(layer(x), x @ torch.cat(expected).T)
    with pytest.raises(
        ValueError, match=r"tensor 'qweight' of shard 1: checkpoint shape \(64, 2\) != \(64, 3\)"
    ):
        layer.load("qweight", quantize_awq(shards[0], 32)[0], 1)  # shard 0's 16 columns, not 24


def gptq_unpacked(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Words -> values, 32/bits consecutive entries along `dim` per word with the first in the low bits."""
    per_word, mask = 32 // bits, 2**bits - 1
    moved = packed.to(torch.int64).movedim(dim, 0)
    out = torch.empty(moved.shape[0] * per_word, *moved.shape[1:], dtype=torch.int64)
    for i in range(per_word):
        out[i::per_word] = (moved >> (bits * i)) & mask
    return out.movedim(0, dim)


def gptq_weight(tensors: dict[str, torch.Tensor], bits: int, zero_offset: int = 1) -> torch.Tensor:
    """[out, in] float weight of GPTQ-layout tensors: (q - (stored zero + zero_offset)) * scale of the
    row's g_idx group (v1 checkpoints store zero - 1)."""
    group = tensors["g_idx"].long()
    values = gptq_unpacked(tensors["qweight"], bits, 0)
    zeros = gptq_unpacked(tensors["qzeros"], bits, 1) + zero_offset
    return ((values - zeros[group]) * tensors["scales"].float()[group]).T


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_packing_and_groups_match_the_formula(bits: int) -> None:
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(7))  # [out, in]
    order = torch.randperm(64, generator=torch.Generator().manual_seed(8))
    tensors = quantize_gptq(weight, bits, 16, order)
    per_word = 32 // bits
    assert tensors["qweight"].shape == (64 // per_word, 16) and tensors["qzeros"].shape == (4, 16 // per_word)
    assert tensors["scales"].shape == (4, 16) and tensors["g_idx"].dtype == torch.int32
    assert torch.equal(tensors["g_idx"][order], torch.arange(64, dtype=torch.int32) // 16)  # act-order groups
    rows = order[16:32]  # group 1
    scale = 2 * weight[5, rows].abs().max() / (2**bits - 1)
    assert tensors["scales"][1, 5] == scale.half()
    midpoint = 2 ** (bits - 1)
    values = gptq_unpacked(tensors["qweight"], bits, 0)
    expected = (torch.round(weight[5, rows] / scale) + midpoint).clamp(0, 2**bits - 1).long()
    assert torch.equal(values[rows, 5], expected)
    assert (gptq_unpacked(tensors["qzeros"], bits, 1) == midpoint - 1).all()  # v1 stores zero - 1
    values = torch.randint(0, 2**bits, (2 * per_word, 3), generator=torch.Generator().manual_seed(9))
    word = sum(int(values[i, 2]) << (bits * i) for i in range(per_word))
    assert int(pack_sequential(values, bits, 0)[0, 2]) & 0xFFFFFFFF == word
    step = tensors["scales"].float()[tensors["g_idx"].long()].T
    assert ((gptq_weight(tensors, bits) - weight).abs() <= step * (0.5 + 2**bits * 2**-10)).all()


def act_order_layer(
    bits: int, g_idx: torch.Tensor | None = None, desc_act: bool = True
) -> tuple[QuantLinear, torch.Tensor]:
    """A GPTQ checkpoint layer (q|k shards of 16 rows, 64 inputs, groups of 16; `desc_act` as its config
    says) loaded from its tensors, groups following a random order of the inputs (or `g_idx`), before
    `after_loading`; and the [out, in] float weight those tensors stand for."""
    method = GptqMethod(bits, 16, checkpoint_is_gptq=True, act_order=desc_act)
    layer = QuantLinear(64, [16, 16], False, method)
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(11))
    order = torch.randperm(64, generator=torch.Generator().manual_seed(12))
    parts = []
    for index, rows in enumerate(weight.split(16)):
        tensors = quantize_gptq(rows, bits, 16, order)
        if g_idx is not None:
            tensors["g_idx"] = g_idx
        for name, tensor in tensors.items():
            layer.load(name, tensor, index)
        parts.append(gptq_weight(tensors, bits))
    return layer, torch.cat(parts)


@pytest.mark.parametrize(("bits", "desc_act"), [(4, True), (8, True), (4, False)])
def test_act_order_layers_are_stored_in_group_order_and_gather_their_inputs(
    bits: int, desc_act: bool
) -> None:
    """Once loaded, a layer whose g_idx scatters its groups has its rows in group order (g_idx is then the
    row order's, so the kernels read one group per K tile) and x's columns gathered to match: the same
    product. The loaded g_idx decides, also where the config's `desc_act` said false."""
    layer, weight = act_order_layer(bits, desc_act=desc_act)
    g_idx, stored = layer.g_idx.clone(), gptq_unpacked(layer.qweight, bits, 0)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(13))
    before = layer(x)
    torch.testing.assert_close(before, x @ weight.T)
    layer.after_loading()
    order = torch.argsort(g_idx, stable=True)
    assert torch.equal(layer.input_order.long(), order) and not layer.method.act_order
    assert torch.equal(layer.g_idx, torch.arange(64, dtype=torch.int32) // 16)
    assert torch.equal(gptq_unpacked(layer.qweight, bits, 0), stored[order])
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)  # the same terms, summed reordered
    assert torch.equal(layer.stored_order(x), x[:, order])


@pytest.mark.parametrize("bits", [4, 8])
def test_reordered_rows_hold_the_same_words_column_chunk_by_chunk(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reorder_rows` repacks a few output columns at a time: chunks of 8 of 20 columns (the last one
    short) give the words of the whole matrix's rows taken in the order."""
    monkeypatch.setattr(gptq, "_REORDER_COLUMNS", 8)
    values = torch.randint(0, 2**bits, (64, 20), generator=torch.Generator().manual_seed(16))
    order = torch.randperm(64, generator=torch.Generator().manual_seed(17))
    reordered = gptq.reorder_rows(pack_sequential(values, bits, 0), order, bits)
    assert torch.equal(reordered, pack_sequential(values[order], bits, 0))


def test_act_order_layers_whose_groups_differ_in_size_keep_their_order() -> None:
    """Only GPTQ's own act-order (every group `group_size` rows) is reordered; another g_idx leaves the
    layer as it is, to the dense route."""
    uneven = torch.cat([torch.zeros(20), torch.ones(12), torch.full((32,), 2)]).to(torch.int32)  # 4th empty
    layer, weight = act_order_layer(
        4, uneven[torch.randperm(64, generator=torch.Generator().manual_seed(15))]
    )
    qweight = layer.qweight.clone()
    layer.after_loading()
    assert layer.method.act_order and layer.input_order is None and torch.equal(layer.qweight, qweight)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(14))
    torch.testing.assert_close(layer(x), x @ weight.T)


def test_a_desc_act_layer_already_in_row_order_is_left_as_it_is() -> None:
    layer, _ = act_order_layer(4, torch.arange(64, dtype=torch.int32) // 16)
    qweight = layer.qweight.clone()
    layer.after_loading()
    assert not layer.method.act_order and layer.input_order is None and torch.equal(layer.qweight, qweight)


def test_fused_gptq_shards_must_share_their_act_order() -> None:
    layer = QuantLinear(32, [16, 16], False, GptqMethod(4, 16, checkpoint_is_gptq=True))
    layer.load("g_idx", torch.arange(32, dtype=torch.int32) // 16, 1)
    with pytest.raises(ValueError, match="fused shards need the same g_idx"):
        layer.load("g_idx", torch.arange(32, dtype=torch.int32).flip(0) // 16, 0)


def _dequantized(layer: QuantLinear) -> torch.Tensor:
    """The float weight a quantized layer stands for, by the formats' own definitions."""
    if isinstance(layer.method, GptqMethod):  # AWQ too, repacked into GPTQ's layout (zeros as they are)
        parts = ("qweight", "qzeros", "scales", "g_idx")
        zero_offset = 0 if isinstance(layer.method, AwqMethod) else 1
        return gptq_weight({name: getattr(layer, name) for name in parts}, layer.method.bits, zero_offset)
    if isinstance(layer.method, (Int8WeightOnlyMethod, Fp8ChannelMethod)):
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
    "fp8-channel": Fp8ChannelMethod,
    "awq": lambda: AwqMethod(16, checkpoint_is_awq=False),
    "gptq4": lambda: GptqMethod(4, 16, checkpoint_is_gptq=False),
    "gptq8": lambda: GptqMethod(8, -1, checkpoint_is_gptq=False),
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
    assert (
        error
        < {
            "none": 1e-6,
            "int8": 0.01,
            "fp8": 0.05,
            "fp8-channel": 0.05,
            "awq": 0.25,
            "gptq4": 0.25,
            "gptq8": 0.02,
        }[kind]
    )


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


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "GEMM"}
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


def test_awq_checkpoint_config_is_read() -> None:
    config = resolve_quantization("awq", AWQ, "c")
    assert config is not None and config.group_size == 128 and config.checkpoint_quantized
    method = config.method_for(["layers.0.q_proj"])
    assert isinstance(method, AwqMethod) and method.checkpoint_tensors == ("qweight", "qzeros", "scales")
    with pytest.raises(ValueError, match=r"AWQ group_size 128, 4 bits: input size 64 must be a multiple"):
        QuantLinear(64, [64], False, method)


@pytest.mark.parametrize(
    ("desc_act", "static_groups", "group_size", "act_order"),
    [
        (True, False, 128, True),
        (False, False, 128, False),
        (True, True, 128, False),
        (True, False, -1, False),
    ],
)
def test_gptq_checkpoint_config_carries_act_order_to_its_layers(
    desc_act: bool, static_groups: bool, group_size: int, act_order: bool
) -> None:
    """A GPTQ layer's routes depend on it: act-order groups leave the row order, unless the groups were
    fixed before the reorder (static_groups) or there is one group."""
    checkpoint = {**GPTQ, "desc_act": desc_act, "static_groups": static_groups, "group_size": group_size}
    config = resolve_quantization(None, checkpoint, "c")
    assert config is not None
    method = config.method_for(["layers.0.q_proj"])
    assert isinstance(method, GptqMethod) and method.act_order == act_order


def test_gptq_static_groups_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match=r"quantization_config\.static_groups must be true or false"):
        resolve_quantization(None, {**GPTQ, "static_groups": "yes"}, "c")


def test_flags_without_a_quantized_checkpoint() -> None:
    assert resolve_quantization(None, None, "c") is None
    int8 = resolve_quantization("int8", None, "c")
    assert int8 is not None and isinstance(int8.method_for(["x"]), Int8WeightOnlyMethod)
    fp8 = resolve_quantization("fp8", None, "c")  # per output channel, so each shard quantizes alone
    assert fp8 is not None and not fp8.checkpoint_quantized
    assert isinstance(fp8.method_for(["x"]), Fp8ChannelMethod)


@pytest.mark.parametrize(
    ("checkpoint", "requested", "message"),
    [
        (
            {"quant_method": "bitsandbytes"},
            None,
            r"quant_method 'bitsandbytes' is not supported \(supported: fp8, awq",
        ),
        (
            {"quant_method": "compressed-tensors"},
            None,
            "quant_method 'compressed-tensors' is not supported yet",
        ),
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
        ({**AWQ, "bits": 8}, None, "bits 8 is not supported"),
        ({**GPTQ, "bits": 3}, None, r"bits 3 is not supported \(only 4 or 8\)"),
        ({**GPTQ, "group_size": 0}, None, "group_size must be a positive integer or -1"),
        ({**GPTQ, "checkpoint_format": "gptq_v2"}, None, "checkpoint_format 'gptq_v2' is not supported"),
        ({**GPTQ, "desc_act": "yes"}, None, "desc_act must be true or false"),
        ({**AWQ, "version": "gemv"}, None, "version 'gemv' is not supported"),
        ({**AWQ, "zero_point": False}, None, "zero_point False is not supported"),
        ({**AWQ, "group_size": -1}, None, "group_size must be a positive integer"),
    ],
)
def test_unreadable_configs_name_the_file_and_the_field(checkpoint, requested, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        resolve_quantization(requested, checkpoint, "/models/x/config.json")
    assert "/models/x/config.json" in str(error.value)


def test_the_flag_offers_exactly_the_methods_that_quantize_at_load() -> None:
    from typing import get_args

    from tokenmill.config import EngineConfig
    from tokenmill.quantization import QUANTIZATION_CHOICES

    flag = get_args(EngineConfig.model_fields["quantization"].annotation)[0]
    assert set(get_args(flag)) == set(QUANTIZATION_CHOICES)


def test_gptq_at_load_is_symmetric_int4_in_groups_of_128() -> None:
    config = resolve_quantization("gptq", None, "random:qwen3-8b")
    assert config is not None and not config.checkpoint_quantized
    method = config.method_for(["model.layers.0.mlp.down_proj"])
    assert isinstance(method, GptqMethod) and (method.bits, method.group_size) == (4, 128)
