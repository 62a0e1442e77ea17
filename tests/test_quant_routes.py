"""Which GEMM a quantized layer runs for a batch (its Triton kernel, or its dense route from a per-format
token count), and the warm-up that launches every variant a batch can select before the engine serves."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tests.helpers.quantized_models import gptq_tensors
from tests.helpers.tiny_models import save_tiny_model
from tests.test_quant_kernels import DEVICE, ON_GPU
from tokenmill import LLM, SamplingParams
from tokenmill.engine import model_runner
from tokenmill.kernels import reference
from tokenmill.kernels.triton import int4_gemv, quant_gemv
from tokenmill.kernels.triton import weight_only_gemm as wo
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.kernels.triton.weight_only_gemm import tiles_for
from tokenmill.quantization import QuantLinear, QuantMethod, triton_gemms
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.fp8 import Fp8ChannelMethod
from tokenmill.quantization.gptq import GptqMethod, dequantize_gptq
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
    # act-order left out of row order (no `after_loading` here): the dense route at every count
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


def act_order_loaded(
    g_idx: torch.Tensor | None = None, group: int = 64, inp: int = 128
) -> tuple[QuantLinear, torch.Tensor]:
    """A 4-bit desc_act GPTQ layer (two shards of 64 outputs) loaded from checkpoint tensors whose
    groups follow a random order of the inputs (or `g_idx`), `after_loading` done; and the [out, in]
    float weight its checkpoint tensors stand for."""
    layer = QuantLinear(inp, (64, 64), False, GptqMethod(4, group, checkpoint_is_gptq=True, act_order=True))
    weights = torch.randn(128, inp, generator=torch.Generator().manual_seed(0)) * 0.05
    parts = []
    for index, rows in enumerate(weights.split(64)):
        tensors = gptq_tensors(rows, 4, group, act_order=True)
        tensors["g_idx"] = tensors["g_idx"] if g_idx is None else g_idx
        for name, tensor in tensors.items():
            layer.load(name, tensor, index)
        parts.append(dequantize_gptq(tensors, 4).T)
    layer.after_loading()
    return layer, torch.cat(parts)


def test_act_order_gptq_runs_the_row_ordered_routes_on_its_gathered_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stored in group order at load, a desc_act layer takes the table entry of a row-ordered one (GEMV,
    kernel, dense route): the kernel and the dense route are given x's columns in the stored order, the
    GEMV x itself and the order to read it through."""
    seen: list[tuple[str, torch.Tensor]] = []

    def recorded(route: str):
        def launch(x: torch.Tensor, weight, fusion=None, *args, **kwargs) -> torch.Tensor:
            seen.append((route, x[:, fusion.input_order] if route == "gemv" else x))
            return x.new_zeros(len(x), weight.out_features)

        return launch

    monkeypatch.setattr(quant_gemv, "gemv", recorded("gemv"))
    monkeypatch.setattr(triton_gemms, "weight_only_gemm", recorded("kernel"))
    monkeypatch.setattr(triton_gemms, "dequantized_dense", lambda layer, x: recorded("dense")(x, layer))
    layer, _ = act_order_loaded()
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    gemm = layer.method.gemm
    assert isinstance(gemm, triton_gemms.RoutedGemm) and gemm.table_key == "gptq4"
    assert layer.input_order is not None and not torch.equal(layer.input_order, torch.arange(128))
    start = triton_gemms.DENSE_FROM_TOKENS["gptq4"]
    x = torch.randn(start, 128, generator=torch.Generator().manual_seed(1))
    for tokens in (1, gemm.gemv_up_to() + 1, start):
        layer(x[:tokens])
    assert [route for route, _ in seen] == ["gemv", "kernel", "dense"]
    for route, rows in seen:
        assert torch.equal(rows, x[: len(rows), layer.input_order]), route


@pytest.mark.slow  # 2-3 s interpreted
@pytest.mark.parametrize("dtype", [torch.float32, *([torch.bfloat16] if ON_GPU else [])])
@pytest.mark.parametrize(("group", "inp"), [(64, 128), (128, 256)])  # `_packed_gemv_kernel`, `int4_gemv`
def test_act_order_gptq_routes_compute_the_checkpoints_product(
    group: int, inp: int, dtype: torch.dtype
) -> None:
    """Each route of a reordered act-order layer, and its fused GEMV with the RMSNorm and the SiLU-and-mul
    prologues, against the product of the weight its checkpoint tensors stand for (on the GPU where there
    is one, compiled)."""
    layer, weight = act_order_loaded(group=group, inp=inp)
    layer, weight = layer.to(DEVICE), weight.to(DEVICE)
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    gemm = layer.method.gemm
    bound = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}

    def check(got: torch.Tensor, x: torch.Tensor) -> None:
        torch.testing.assert_close(got.float(), x.to(dtype).float() @ weight.T, **bound)

    generator = torch.Generator(DEVICE)
    x = torch.randn(
        triton_gemms.DENSE_FROM_TOKENS["gptq4"], inp, generator=generator.manual_seed(2), device=DEVICE
    )
    x = x.to(dtype)
    # the GEMV (`int4_mma` from 2 rows where it serves: groups of 128, 16-bit on a GPU), kernel, dense route
    for tokens in (1, 2, gemm.gemv_up_to() + 1, len(x)):
        check(layer(x[:tokens]), x[:tokens])
    norm = ((torch.rand(inp, generator=generator.manual_seed(3), device=DEVICE) + 0.5).to(dtype), 1e-6)
    check(gemm.fused_gemv(layer, x[:2], norm=norm), reference.rms_norm(x[:2], *norm)[0])
    gate_up = torch.randn(2, 2 * inp, generator=generator.manual_seed(4), device=DEVICE).to(dtype)
    check(gemm.fused_gemv(layer, gate_up, silu_mul=True), reference.silu_and_mul(gate_up))


def test_act_order_gptq_with_groups_of_other_sizes_takes_the_dense_route_at_every_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A g_idx whose groups are not all `group_size` rows cannot be stored in row-ordered groups: every
    kernel would read a group per input row, so the layer dequantizes its weight once and runs cuBLAS,
    from one token on, and has no fused GEMV."""
    uneven = torch.cat([torch.zeros(80), torch.ones(48)]).to(torch.int32)
    layer, _ = act_order_loaded(uneven[torch.randperm(128, generator=torch.Generator().manual_seed(5))])
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
