"""Which GEMM a quantized layer runs for a batch (its Triton kernel, or its dense route from a per-format
token count), and the warm-up that launches every variant a batch can select before the engine serves."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tests.helpers.tiny_models import save_tiny_model
from tokenmill import LLM, SamplingParams
from tokenmill.engine import model_runner
from tokenmill.kernels.triton import int4_gemv, quant_gemv
from tokenmill.kernels.triton import weight_only_gemm as wo
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.kernels.triton.weight_only_gemm import tiles_for
from tokenmill.quantization import QuantLinear, QuantMethod, triton_gemms
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.fp8 import Fp8ChannelMethod
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod
from tokenmill.quantization.warm_up import compile_gemm_variants

# These run CPU tensors through the kernels, so only on Triton's interpreter (a compiled run on a GPU,
# TRITON_INTERPRET=0, cannot launch them); the rest run either way.
INTERPRETER_ONLY = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="CPU tensors: Triton's interpreter only"
)

METHODS = {
    "int8": Int8WeightOnlyMethod,
    "fp8-channel": Fp8ChannelMethod,
    "awq": lambda: AwqMethod(64, checkpoint_is_awq=False),
    "gptq4": lambda: GptqMethod(4, 64, checkpoint_is_gptq=False),
    "gptq4-act-order": lambda: GptqMethod(4, 64, checkpoint_is_gptq=False, act_order=True),
}


def loaded(method: QuantMethod, inp: int = 128, shards: tuple[int, ...] = (64, 32)) -> QuantLinear:
    layer = QuantLinear(inp, shards, False, method)
    weights = torch.randn(sum(shards), inp, generator=torch.Generator().manual_seed(0)) * 0.05
    for index, rows in enumerate(weights.split(list(shards))):
        layer.load("weight", rows, index)
    return layer


@INTERPRETER_ONLY
def test_fp8_per_channel_runs_the_w8_kernel_up_to_16_tokens_and_scaled_mm_above(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch._scaled_mm (row-wise scales) loses to the W8 kernel at decode sizes: where it exists, batches
    of at most 16 tokens still decode the e4m3 bytes in the Triton kernel."""
    scaled_mm_tokens: list[int] = []

    def scaled_mm(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
        scaled_mm_tokens.append(len(rows))
        return layer.method.apply(layer, rows, None)

    monkeypatch.setattr(triton_gemms, "scaled_mm_scales", lambda device: "row")
    monkeypatch.setattr(triton_gemms, "scaled_mm_rows", scaled_mm)
    layer = loaded(Fp8ChannelMethod())
    x = torch.randn(17, 128, generator=torch.Generator().manual_seed(1))
    expected = layer(x)
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    torch.testing.assert_close(layer(x[:16]), expected[:16], atol=1e-4, rtol=1e-4)
    assert scaled_mm_tokens == []
    layer(x)
    assert scaled_mm_tokens == [17]


@pytest.mark.parametrize("kind", ["int8", "awq", "gptq4"])
def test_every_format_takes_its_dense_route_from_its_table_entry(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = loaded(METHODS[kind]())
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    gemm = layer.method.gemm
    assert isinstance(gemm, triton_gemms.RoutedGemm)
    start = triton_gemms.DENSE_FROM_TOKENS[gemm.table_key]
    assert start is not None and gemm.dense_from() == start
    launched: set[tuple] = set()
    recorded_variants(monkeypatch, launched)
    layer(torch.zeros(start - 1, 128))
    assert {route for _, _, route, _ in launched} == {"kernel"}
    layer(torch.zeros(start, 128))
    assert {route for _, _, route, _ in launched} == {"kernel", "dense"}


def test_act_order_gptq_takes_the_dense_route_at_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups out of row order make every kernel read a group per input row: a desc_act layer (without
    static groups) dequantizes its weight once and runs cuBLAS, from one token on, and has no fused GEMV."""
    layer = loaded(GptqMethod(4, 64, checkpoint_is_gptq=False, act_order=True))
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    gemm = layer.method.gemm
    assert isinstance(gemm, triton_gemms.RoutedGemm) and gemm.table_key == "gptq-act-order"
    assert gemm.gemv_up_to() == 0 and gemm.variant_tokens() == (1,)
    launched: set[tuple] = set()
    recorded_variants(monkeypatch, launched)
    for tokens in (1, 2, 5, 17, 200):
        layer(torch.zeros(tokens, 128))
    assert {route for _, _, route, _ in launched} == {"dense"}


def recorded_variants(monkeypatch: pytest.MonkeyPatch, launched: set[tuple]) -> None:
    """Replace the launches by stand-ins that record (layer shape, route, tile shape) and return zeros."""

    def kernel(x: torch.Tensor, weight, split_k=None, tiles=None) -> torch.Tensor:
        launched.add((weight.in_features, weight.out_features, "kernel", tiles_for(len(x))))
        return x.new_zeros(len(x), weight.out_features)

    def dense(weight, dtype: torch.dtype) -> torch.Tensor:
        launched.add((weight.in_features, weight.out_features, "dense", None))
        return torch.zeros(weight.in_features, weight.out_features, dtype=dtype)

    def gemv(x: torch.Tensor, weight, fusion=NO_FUSION) -> torch.Tensor:
        launched.add((weight.in_features, weight.out_features, "gemv", None))
        return x.new_zeros(len(x), weight.out_features)

    monkeypatch.setattr(triton_gemms, "weight_only_gemm", kernel)
    monkeypatch.setattr(quant_gemv, "gemv", gemv)
    monkeypatch.setattr(triton_gemms, "dequantize", dense)


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_warm_up_launches_every_variant_a_batch_can_select(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every (route, tile shape) that some batch of 1..299 tokens selects for each layer shape is launched
    by the warm-up; and each shape once, however many layers share it."""
    model = nn.Sequential(*(loaded(METHODS[kind]()) for _ in range(3)), loaded(METHODS[kind](), 64, (128,)))
    triton_gemms.use_triton_gemms(model)
    warmed: set[tuple] = set()
    recorded_variants(monkeypatch, warmed)
    calls = compile_gemm_variants(model, torch.float32)
    assert calls == len(warmed)  # one call per variant and layer shape: the shared shapes ran once
    selected: set[tuple] = set()
    recorded_variants(monkeypatch, selected)
    for layer in (model[0], model[3]):
        for tokens in range(1, 300):
            layer(torch.zeros(tokens, layer.in_features))
    assert warmed == selected


@pytest.mark.slow
@INTERPRETER_ONLY
def test_the_model_runner_compiles_the_quantized_gemms_before_serving(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed: list[int] = []

    def spy(model: nn.Module, dtype: torch.dtype) -> int:
        warmed.append(compile_gemm_variants(model, dtype))
        return warmed[-1]

    monkeypatch.setattr(model_runner, "compile_gemm_variants", spy)
    model = save_tiny_model("qwen3", tmp_path)
    llm = LLM(
        str(model), device="cpu", dtype="float32", kernels="triton", quantization="int8", num_kv_blocks=16
    )
    try:
        assert warmed and warmed[0] > 0
    finally:
        llm.shutdown()


@pytest.mark.slow  # 1.2-1.7 s a format on the interpreter
@pytest.mark.parametrize("kind", sorted(METHODS))
@INTERPRETER_ONLY
def test_batches_launch_only_kernel_specialisations_the_warm_up_compiled(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton's own specialisation key (constexprs, and integers' == 1 / % 16 and pointers' alignment) of
    every quantized-GEMM launch, for batches of many sizes, is one the warm-up launched."""
    specialisation = pytest.importorskip("tests.test_kernel_specialization")
    launched: set[tuple] = set()
    kernels = (wo._weight_only_gemm_kernel, wo._dequantize_kernel)
    gemvs = (quant_gemv._byte_gemv_kernel, quant_gemv._packed_gemv_kernel, int4_gemv._int4_gemv_kernel)
    for kernel in (*kernels, *gemvs):

        def hook(*args, _kernel=kernel, **kwargs) -> None:
            launched.add(specialisation._key(_kernel, args, kwargs))

        monkeypatch.setattr(kernel, "pre_run_hooks", [*kernel.pre_run_hooks, hook])
    model = nn.Sequential(loaded(METHODS[kind]()), loaded(METHODS[kind](), 64, (128,)))
    triton_gemms.use_triton_gemms(model)
    compile_gemm_variants(model, torch.float16)
    warmed = set(launched)
    launched.clear()
    for tokens in (1, 2, 3, 16, 17, 64, 65, 127, 128, 255, 256, 300):
        for layer in model:
            layer(torch.randn(tokens, layer.in_features, dtype=torch.float16))
    assert launched and launched <= warmed


@pytest.mark.slow
@INTERPRETER_ONLY
@pytest.mark.parametrize("quantization", ["fp8", "int8"])
def test_prompts_launch_only_norm_and_activation_variants_the_warm_up_launched(
    quantization: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RMSNorm and SiLU-and-mul that follow each quantized GEMM route (fp8 rows with their scales,
    or plain ones) run, for prompts of many lengths, only in specialisations the engine launched before
    serving: a fresh fp8 engine once compiled two in its first prefix-cached prompt of 16 new tokens."""
    specialisation = pytest.importorskip("tests.test_kernel_specialization")
    from tokenmill.kernels.triton import activation, norm

    launched: set[tuple] = set()
    for kernel in (norm._add_rms_norm_kernel, activation._silu_and_mul_kernel):

        def hook(*args, _kernel=kernel, **kwargs) -> None:
            launched.add(specialisation._key(_kernel, args, kwargs))

        monkeypatch.setattr(kernel, "pre_run_hooks", [*kernel.pre_run_hooks, hook])
    model = save_tiny_model("qwen3", tmp_path)
    llm = LLM(
        str(model), device="cpu", dtype="float32", kernels="triton", quantization=quantization,
        num_kv_blocks=64, max_model_len=256,
    )  # fmt: skip
    try:
        warmed = set(launched)
        launched.clear()
        prompts = [list(range(5, 5 + n)) for n in (3, 17, 40, 70, 150)]
        llm.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), use_tqdm=False)
        assert launched and launched <= warmed
    finally:
        llm.shutdown()
