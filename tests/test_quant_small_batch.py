"""Quantized projections on the fused small-batch path: each format's fused GEMV (RMSNorm or SiLU-and-mul
prologue, bias, residual epilogue) equals the unfused quantized path around the same GEMV, a quantized
decode layer takes the fused path up to its GEMV's row count, a one-token decode step launches as many
kernels as the bf16 model's, and greedy decoding matches the unfused engine token for token."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tests.helpers.launch_count import decode_step_launches
from tests.helpers.quantized_models import (
    gptq_tensors,
    save_awq_checkpoint,
    save_fp8_checkpoint,
    save_gptq_checkpoint,
)
from tests.test_quant_kernels import DEVICE, ON_GPU, draw
from tokenmill import LLM, SamplingParams
from tokenmill.kernels import reference
from tokenmill.kernels.ops import select_ops
from tokenmill.models import small_batch
from tokenmill.quantization import QuantLinear, triton_gemms
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

METHODS = {
    "int8": Int8WeightOnlyMethod,
    "fp8-channel": Fp8ChannelMethod,
    "fp8-block": lambda: Fp8BlockMethod((32, 32), checkpoint_is_fp8=False),
    "awq": lambda: AwqMethod(32, checkpoint_is_awq=False),
    "awq-g128": lambda: AwqMethod(128, checkpoint_is_awq=False),  # `int4_gemv` (K 256, below)
    "gptq4": lambda: GptqMethod(4, 64, checkpoint_is_gptq=False),
    "gptq8": lambda: GptqMethod(8, 32, checkpoint_is_gptq=False),
    # desc_act checkpoints' tensors, stored in group order at load: the GEMVs read x and the norm weight
    # through the order (`_packed_gemv_kernel`; `int4_gemv` for groups of 128)
    "gptq4-act-order": lambda: GptqMethod(4, 64, checkpoint_is_gptq=True, act_order=True),
    "gptq4-act-order-g128": lambda: GptqMethod(4, 128, checkpoint_is_gptq=True, act_order=True),
}
IN, OUT_SHARDS = 192, (64, 32, 32)  # K not a power of two: the norm's and the K loop's last steps masked
# whole groups of 128 (K split in two on one CPU "SM")
IN_FEATURES = {"awq-g128": 256, "gptq4-act-order-g128": 256}


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


@pytest.fixture(autouse=True)
def _gemv_up_to_eight_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every format's GEMV takes the batches these tests run, whatever the tuning table says."""
    for key in triton_gemms.GEMV_UP_TO_TOKENS:
        monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, key, 8)


def quantized(kind: str, bias: bool = True) -> QuantLinear:
    in_features = IN_FEATURES.get(kind, IN)
    layer = QuantLinear(in_features, OUT_SHARDS, bias, METHODS[kind]())
    for index, rows in enumerate(draw(sum(OUT_SHARDS), in_features, seed=31).mul(0.05).split(OUT_SHARDS)):
        if kind.startswith("gptq4-act-order"):
            for name, tensor in gptq_tensors(rows, 4, layer.group_size, act_order=True).items():
                layer.load(name, tensor, index)
        else:
            layer.load("weight", rows, index)
        if bias:
            layer.load("bias", draw(rows.shape[0], seed=32 + index), index)
    layer.after_loading()
    assert (layer.input_order is not None) == kind.startswith("gptq4-act-order")
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    return layer


def unfused(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, on the same GEMV; for a layer stored in another input order, the method's PyTorch
    reference instead, so that the GEMV's gather meets an independent one (`index_select`)."""
    return layer(x) if layer.input_order is None else layer.method.apply(layer, x, layer.bias)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """float32: the fused and unfused paths differ only in the order of the norm's sum of squares (and
    the bias added before or after rounding); half precision: by an output rounding."""
    bound = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    return {"atol": bound, "rtol": bound}


# every format in float32; a byte and a packed format in half precision (bf16 on a GPU only: the
# interpreter's bf16 arithmetic is numpy's float32). The fast layer keeps int8 in float32 and awq-g128
# in float16 (the byte and the int4 GEMV); the other cases take 0.2-1 s each interpreted.
FAST_CASES = {("int8", torch.float32), ("awq-g128", torch.float16)}
CASES = [
    case if case in FAST_CASES else pytest.param(*case, marks=pytest.mark.slow)
    for case in (
        *((kind, torch.float32) for kind in sorted(METHODS) if kind != "awq-g128"),
        ("awq-g128", torch.float32),
        *(
            (kind, dtype)
            for kind in ("int8", "awq", "awq-g128")
            for dtype in (torch.float16, *([torch.bfloat16] if ON_GPU else []))
        ),
    )
]


@pytest.mark.parametrize(("kind", "dtype"), CASES)
def test_fused_gemv_with_norm_prologue_equals_norm_then_projection(kind: str, dtype: torch.dtype) -> None:
    layer = quantized(kind)
    rows, k = 2, layer.in_features
    x = draw(rows, k, seed=33).to(dtype)
    norm_weight, eps = (torch.rand(k) + 0.5).to(dtype), 1e-6
    fused = layer.method.gemm.fused_gemv(layer, x, norm=(norm_weight, eps))
    expected = unfused(layer, reference.rms_norm(x, norm_weight, eps)[0])
    assert fused.dtype == dtype and fused.shape == (rows, sum(OUT_SHARDS))
    torch.testing.assert_close(fused.float(), expected.float(), **tolerance(dtype))


@pytest.mark.parametrize(("kind", "dtype"), CASES)
def test_fused_gemv_with_silu_mul_prologue_and_residual_equals_the_unfused_ops(
    kind: str, dtype: torch.dtype
) -> None:
    layer = quantized(kind, bias=False)
    gate_up = draw(2, 2 * layer.in_features, seed=34).to(dtype)
    residual = draw(2, sum(OUT_SHARDS), seed=35).to(dtype)
    fused = layer.method.gemm.fused_gemv(layer, gate_up, silu_mul=True, residual=residual)
    expected = unfused(layer, reference.silu_and_mul(gate_up)) + residual
    torch.testing.assert_close(fused.float(), expected.float(), **tolerance(dtype))


@pytest.mark.parametrize("kind", ["int8", pytest.param("gptq4", marks=pytest.mark.slow)])  # gptq4: 0.5 s
def test_fused_gemv_adds_bias_and_residual_to_a_plain_input(kind: str) -> None:
    layer = quantized(kind)
    x, residual = draw(3, IN, seed=36), draw(3, sum(OUT_SHARDS), seed=37)
    fused = layer.method.gemm.fused_gemv(layer, x, residual=residual)
    torch.testing.assert_close(fused, layer(x) + residual, **tolerance(torch.float32))


def test_each_row_of_a_fused_gemv_is_the_one_it_gets_alone() -> None:
    """One program per (tile, row): the norm of one row does not see another's."""
    layer = quantized("awq")
    x, norm = draw(3, IN, seed=38), (torch.rand(IN) + 0.5, 1e-6)
    both = layer.method.gemm.fused_gemv(layer, x, norm=norm)
    assert torch.equal(both[1:2], layer.method.gemm.fused_gemv(layer, x[1:2], norm=norm))


class _Layer(nn.Module):
    """What `small_batch.takes` reads of a decoder layer: its four projections."""

    def __init__(self, projections: list[nn.Module]) -> None:
        super().__init__()
        qkv, o, gate_up, down = projections
        self.self_attn, self.mlp = nn.Module(), nn.Module()
        self.self_attn.qkv_proj, self.self_attn.o_proj = qkv, o
        self.mlp.gate_up_proj, self.mlp.down_proj = gate_up, down


def test_a_quantized_layer_takes_the_fused_path_up_to_its_gemv_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = select_ops("triton", DEVICE).small_batch
    layer = _Layer([quantized("gptq4") for _ in range(4)])
    monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, "gptq4", 2)
    assert small_batch.takes(ops, layer, 1) and small_batch.takes(ops, layer, 2)
    assert not small_batch.takes(ops, layer, 3)
    monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, "gptq4", 0)  # no GEMV: the layer's own path
    assert not small_batch.takes(ops, layer, 1)
    reference_layer = _Layer([QuantLinear(IN, OUT_SHARDS, False, METHODS["int8"]()) for _ in range(4)])
    assert not small_batch.takes(ops, reference_layer, 1)  # no Triton GEMM set: no fused GEMV


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts launches in the interpreter")
@pytest.mark.parametrize("kind", ["int8", "awq"])
def test_a_quantized_decode_step_launches_as_many_kernels_as_the_bf16_one(
    tiny_model_dir, tmp_path, kind: str
) -> None:
    """int8 (byte GEMV, quantized at load) and an AWQ checkpoint (packed GEMV)."""
    model = tiny_model_dir("qwen3")
    plain = decode_step_launches(LLM(str(model), device="cpu", kernels="triton", num_kv_blocks=16))
    quantization = "int8" if kind == "int8" else None
    source = model if kind == "int8" else save_awq_checkpoint(model, tmp_path, 32)
    llm = LLM(str(source), device="cpu", kernels="triton", quantization=quantization, num_kv_blocks=16)
    quantized_launches = decode_step_launches(llm)
    layers = llm.engine.model_config.num_hidden_layers
    print(f"decode step launches, {layers} layers: bf16 {plain.total()}, {kind} {quantized_launches.total()}")
    gemvs = {"_byte_gemv_kernel", "_packed_gemv_kernel", "_int4_gemv_kernel"}
    assert (
        sum(n for name, n in quantized_launches.items() if name.removeprefix("triton.") in gemvs)
        == 4 * layers
    )
    assert quantized_launches.total() == plain.total()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fp8", "fp8-checkpoint", "gptq", "gptq-act-order"])
def test_fused_quantized_decode_generates_what_the_unfused_path_does(
    tiny_model_dir, tmp_path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float32, greedy, two sequences decoding together (rows 2 on the fused GEMVs); fp8 quantized at
    load, an FP8 block-wise checkpoint (its table entry raised to two rows), and GPTQ checkpoints of
    qwen2 in groups of 32 (q|k|v biases in the epilogue), with and without act-order (stored in group
    order at load, the inputs and norm weights gathered)."""
    if kind == "fp8":
        source, quantization = tiny_model_dir("qwen3"), "fp8"
    elif kind == "fp8-checkpoint":
        source, quantization = save_fp8_checkpoint(tiny_model_dir("qwen3"), tmp_path, (32, 32)), None
        monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, "fp8-block", 2)
    else:
        act_order = kind == "gptq-act-order"
        source = save_gptq_checkpoint(tiny_model_dir("qwen2"), tmp_path, 4, 32, act_order)
        quantization = None
    prompts = [[5, 6, 7], list(range(20, 40))]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    tokens = {}
    for fused in (True, False):
        if not fused and kind == "gptq-act-order":  # the unfused run gathers apart: the kernel route
            for key in ("gptq4", "gptq4-mma"):
                monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, key, 0)
        llm = LLM(
            str(source), device=DEVICE.type, dtype="float32", kernels="triton",
            quantization=quantization, num_kv_blocks=32, small_batch_kernels=fused,
        )  # fmt: skip
        layer = llm.engine.runner.model.layers[0]
        assert (
            layer.ops.small_batch is not None and small_batch.takes(layer.ops.small_batch, layer, 2)
        ) == fused
        tokens[fused] = [
            output.outputs[0].token_ids for output in llm.generate(prompts, params, use_tqdm=False)
        ]
    assert tokens[True] == tokens[False]
