"""Kernels that write a projection's fp8 activations as they produce them (`Fp8Rows`): the RMSNorm and the
SiLU-and-mul quantize exactly as the separate quantization kernel would, only the projections whose GEMM
multiplies fp8 activations take them, and a model gives the same logprobs either way.

On CI the kernels run on Triton's interpreter (float32); compiled on a GPU, in bfloat16 too, and the model
test runs the real torch._scaled_mm (`TRITON_INTERPRET=0 pytest tests/test_fp8_rows.py`)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, run_compiled
from tokenmill import LLM, SamplingParams
from tokenmill.kernels import reference
from tokenmill.kernels.fp8_rows import FP8_DTYPE, Fp8Rows, quantize_rows
from tokenmill.kernels.triton import activation, fp8_gemm, norm
from tokenmill.quantization import QuantLinear, UnquantizedMethod, triton_gemms
from tokenmill.quantization.fp8 import Fp8ChannelMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = [torch.float32, *([torch.bfloat16] if ON_GPU else [])]
pytestmark = pytest.mark.skipif(
    ON_GPU and not fp8_gemm.has_fp8_dot(DEVICE), reason="this GPU has no fp8 (sm_89+ needed)"
)


def draw(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator(DEVICE).manual_seed(seed)
    return torch.randn(*shape, generator=generator, device=DEVICE).to(dtype)


def assert_quantized_as(got: Fp8Rows | torch.Tensor, rows: torch.Tensor) -> None:
    """`got` holds exactly what the quantization kernel makes of the model-dtype `rows`."""
    assert isinstance(got, Fp8Rows) and got.dtype == rows.dtype
    values, scales = fp8_gemm.quantize_token_groups(rows, rows.shape[1])
    assert got.values.dtype == FP8_DTYPE and got.scales.shape == (rows.shape[0], 1)
    assert torch.equal(got.values.view(torch.uint8), values.view(torch.uint8))
    assert torch.equal(got.scales, scales)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("cols", [96, 200])  # 200: the row's block is partly masked
def test_rms_norm_writes_the_rows_the_quantization_kernel_makes(
    dtype: torch.dtype, with_residual: bool, cols: int
) -> None:
    x, residual = draw(7, cols, seed=1, dtype=dtype) * 3, draw(7, cols, seed=2, dtype=dtype)
    weight = (torch.rand(cols, generator=torch.Generator().manual_seed(3)) + 0.5).to(DEVICE, dtype)

    def run(quantize: bool) -> tuple[torch.Tensor | Fp8Rows, torch.Tensor | None]:
        return norm.rms_norm(
            x.clone(), weight, 1e-6, residual.clone() if with_residual else None, None, quantize
        )

    (normed, stream), (got, got_stream) = run(False), run(True)
    assert_quantized_as(got, normed)
    if with_residual:
        assert stream is not None and got_stream is not None and torch.equal(got_stream, stream)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1500, 64])
def test_silu_and_mul_writes_the_rows_the_quantization_kernel_makes(dtype: torch.dtype, width: int) -> None:
    gate_up = draw(5, 2 * width, seed=4, dtype=dtype) * 2
    assert_quantized_as(activation.silu_and_mul(gate_up, quantize=True), activation.silu_and_mul(gate_up))


def test_rows_wider_than_one_program_are_quantized_after_the_product(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activation, "QUANTIZE_MAX_WIDTH", 512)
    gate_up = draw(3, 2 * 1500, seed=5)
    launches = []
    kernel = activation._silu_and_mul_quantize_kernel
    monkeypatch.setattr(kernel, "pre_run_hooks", [*kernel.pre_run_hooks, lambda *a, **k: launches.append(1)])
    assert_quantized_as(activation.silu_and_mul(gate_up, quantize=True), activation.silu_and_mul(gate_up))
    assert not launches


@pytest.mark.parametrize("with_residual", [False, True])
def test_the_references_quantize_their_model_dtype_rows(with_residual: bool) -> None:
    x, residual, weight = draw(4, 96, seed=6), draw(4, 96, seed=7), draw(96, seed=8)
    normed, stream = reference.rms_norm(x, weight, 1e-6, residual if with_residual else None)
    got, got_stream = reference.rms_norm(x, weight, 1e-6, residual if with_residual else None, None, True)
    want = quantize_rows(normed)
    assert isinstance(got, Fp8Rows) and got.dtype == x.dtype
    assert torch.equal(got.values.float(), want.values.float()) and torch.equal(got.scales, want.scales)
    assert (got_stream is None) == (not with_residual) and (stream is None or torch.equal(got_stream, stream))
    gate_up = draw(4, 256, seed=9)
    product = quantize_rows(reference.silu_and_mul(gate_up))
    got_product = reference.silu_and_mul(gate_up, None, True)
    assert isinstance(got_product, Fp8Rows) and torch.equal(
        got_product.values.float(), product.values.float()
    )
    assert torch.equal(got_product.scales, product.scales)


def loaded(method, inp: int = 128) -> QuantLinear:
    layer = QuantLinear(inp, (64, 32), False, method)
    layer.load("weight", torch.randn(96, inp, generator=torch.Generator().manual_seed(0)) * 0.05, None)
    return layer


def test_only_fp8_per_channel_takes_fp8_rows_and_only_on_its_dense_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triton_gemms, "_rowwise_scaled_mm", lambda device: True)
    fp8, int8, plain = loaded(Fp8ChannelMethod()), loaded(Int8WeightOnlyMethod()), loaded(UnquantizedMethod())
    triton_gemms.use_triton_gemms(nn.Sequential(fp8, int8, plain))
    start = triton_gemms.DENSE_FROM_TOKENS["fp8-channel"]
    assert start is not None and start > triton_gemms.GEMV_UP_TO_TOKENS["fp8-channel"]
    assert [fp8.takes_fp8_rows(tokens) for tokens in (1, start - 1, start, 4096)] == [
        False,
        False,
        True,
        True,
    ]
    assert not int8.takes_fp8_rows(4096) and not plain.takes_fp8_rows(4096)
    monkeypatch.setitem(triton_gemms.DENSE_FROM_TOKENS, "fp8-channel", None)
    assert not fp8.takes_fp8_rows(4096)


def test_a_model_hands_fp8_rows_to_q_k_v_gate_up_and_down_with_the_same_logprobs(
    tiny_model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40-token prompt runs every fp8 projection on the dense route: the norms and SiLU-and-mul quantize
    q|k|v's, gate|up's and down's input as they write it, o's input (attention's output) is quantized by
    the GEMM. The logprobs equal those of the same model with no producer quantizing."""
    took_rows: list[bool] = []
    real = triton_gemms.scaled_mm_rows

    def scaled_mm(layer: QuantLinear, rows: torch.Tensor | Fp8Rows) -> torch.Tensor:
        took_rows.append(isinstance(rows, Fp8Rows))
        if ON_GPU:
            return real(layer, rows)
        if isinstance(rows, torch.Tensor):  # as the real route quantizes them
            rows = Fp8Rows(*fp8_gemm.quantize_token_groups(rows, rows.shape[1]), rows.dtype)
        weight = layer.weight.float() * layer.weight_scale[:, None]
        return ((rows.values.float() * rows.scales) @ weight.T).to(rows.dtype)

    if not ON_GPU:
        monkeypatch.setattr(triton_gemms, "_rowwise_scaled_mm", lambda device: True)
    monkeypatch.setattr(triton_gemms, "scaled_mm_rows", scaled_mm)
    prompt = list(range(3, 43))
    params = SamplingParams(max_tokens=2, temperature=0.0, logprobs=5)

    def generate() -> list:
        llm = LLM(
            str(tiny_model_dir("qwen3")), device=DEVICE.type, dtype="bfloat16" if ON_GPU else "float32",
            kernels="triton", quantization="fp8", num_kv_blocks=16, enforce_eager=True,
        )  # fmt: skip
        try:
            took_rows.clear()  # not the warm-up's calls
            return llm.generate([prompt], params)[0].outputs[0].logprobs
        finally:
            llm.shutdown()

    fused = generate()
    layers = 2
    assert took_rows == [True, False, True, True] * layers  # q|k|v, o, gate|up, down; the decode step: GEMVs
    monkeypatch.setattr(triton_gemms.RoutedGemm, "takes_fp8_rows", lambda self, tokens: False)
    unfused = generate()
    assert took_rows == [False] * 4 * layers
    assert fused == unfused


def compile_kernels(capability: int) -> None:
    """The quantizing variants of both kernels build for an fp8 GPU."""
    bf16, u8, f32, ints = (
        torch.empty(1, dtype=d) for d in (torch.bfloat16, torch.uint8, torch.float32, torch.int32)
    )
    for n_cols in (1024, 4096):
        compile_for(
            norm._add_rms_norm_kernel, capability, {"num_warps": 4 if n_cols <= 2048 else 8}, True,
            x_ptr=bf16, residual_ptr=bf16, weight_ptr=bf16, out_ptr=u8, residual_out_ptr=bf16, scale_ptr=f32,
            stride_x=n_cols, stride_r=n_cols, stride_o=n_cols, n_cols=n_cols, eps=1e-6, h_ptr=bf16, b_ptr=bf16,
            slots_ptr=ints, ranks_ptr=ints, stride_h=0, stride_h_slot=0, stride_b_slot=0, stride_b_rank=0,
            HAS_RESIDUAL=True, HAS_LORA=False, QUANTIZE=True, BLOCK=n_cols, BLOCK_R=1,
        )  # fmt: skip
    for width in (3072, 9728, 12288):
        block = 1 << (width - 1).bit_length()
        compile_for(
            activation._silu_and_mul_quantize_kernel, capability, {"num_warps": max(4, block // 1024)}, True,
            in_ptr=bf16, out_ptr=u8, scale_ptr=f32, stride_in=2 * width, stride_out=width, width=width,
            BLOCK=block,
        )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("capability", [c for c in ARCHITECTURES.values() if c >= 89])
def test_the_quantizing_kernels_compile_for_fp8_gpus(capability: int) -> None:
    run_compiled("tests.test_fp8_rows:compile_kernels", capability)
