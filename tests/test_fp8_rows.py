"""What passes between an fp8 GEMM and the kernels beside it: the RMSNorm and the SiLU-and-mul write a
projection's fp8 activations as they produce them (`Fp8Rows`), exactly as the separate quantization kernel
would, and apply a GEMM output's scales as they load it (`ScaledRows`), exactly as resolving it first
would; only the projections whose GEMM multiplies fp8 activations take them, and a model gives the same
logprobs either way.

On CI the kernels run on Triton's interpreter (float32); compiled on a GPU, in bfloat16 too, and the model
test runs the real torch._scaled_mm (`TRITON_INTERPRET=0 pytest tests/test_fp8_rows.py`)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, run_compiled
from tokenmill import LLM, SamplingParams
from tokenmill.distributed.group import TensorParallel
from tokenmill.distributed.linear import ShardedLinear
from tokenmill.kernels import reference
from tokenmill.kernels.fp8_rows import FP8_DTYPE, Fp8Rows, ScaledRows
from tokenmill.kernels.reference import quantize_rows
from tokenmill.kernels.triton import activation, fp8_gemm, fp8_quant, norm, rope
from tokenmill.quantization import QuantLinear, UnquantizedMethod, triton_gemms
from tokenmill.quantization.fp8 import Fp8ChannelMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = [torch.float32, torch.float16, *([torch.bfloat16] if ON_GPU else [])]
# the kernel tests below run float32 in the fast layer, every dtype in the slow one (0.1-0.4 s each)
DTYPE_PARAMS = [DTYPES[0], *(pytest.param(dtype, marks=pytest.mark.slow) for dtype in DTYPES[1:])]
pytestmark = pytest.mark.skipif(
    ON_GPU and not fp8_gemm.has_fp8_dot(DEVICE), reason="this GPU has no fp8 (sm_89+ needed)"
)


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def draw(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator(DEVICE).manual_seed(seed)
    return torch.randn(*shape, generator=generator, device=DEVICE).to(dtype)


def assert_quantized_as(got: Fp8Rows | torch.Tensor, rows: torch.Tensor) -> None:
    """`got` holds exactly what the quantization kernel makes of the model-dtype `rows`."""
    assert isinstance(got, Fp8Rows) and got.out_dtype == rows.dtype
    values, scales = fp8_quant.quantize_token_groups(rows, rows.shape[1])
    assert got.values.dtype == FP8_DTYPE and got.scales.shape == (rows.shape[0], 1)
    assert torch.equal(got.values.view(torch.uint8), values.view(torch.uint8))
    assert torch.equal(got.scales, scales)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("cols", [96, 200])  # 200: the row's block is partly masked
def test_rms_norm_writes_the_rows_the_quantization_kernel_makes(
    dtype: torch.dtype, with_residual: bool, cols: int
) -> None:
    x, residual = draw(7, cols, seed=1, dtype=dtype) * 3, draw(7, cols, seed=2, dtype=dtype)
    weight = draw(cols, seed=3).abs().to(dtype) + 0.5

    def run(quantize: bool) -> tuple[torch.Tensor | Fp8Rows, torch.Tensor | None]:
        return norm.rms_norm(
            x.clone(), weight, 1e-6, residual.clone() if with_residual else None, None, quantize
        )

    (normed, stream), (got, got_stream) = run(False), run(True)
    assert_quantized_as(got, normed)
    if with_residual:
        assert stream is not None and got_stream is not None and torch.equal(got_stream, stream)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("width", [1500, 64])
def test_silu_and_mul_writes_the_rows_the_quantization_kernel_makes(dtype: torch.dtype, width: int) -> None:
    gate_up = draw(5, 2 * width, seed=4, dtype=dtype) * 2
    assert_quantized_as(activation.silu_and_mul(gate_up, quantize=True), activation.silu_and_mul(gate_up))


@pytest.mark.parametrize("with_residual", [False, True])
def test_the_references_quantize_their_model_dtype_rows(with_residual: bool) -> None:
    x, residual, weight = draw(4, 96, seed=6), draw(4, 96, seed=7), draw(96, seed=8)
    normed, stream = reference.rms_norm(x, weight, 1e-6, residual if with_residual else None)
    got, got_stream = reference.rms_norm(x, weight, 1e-6, residual if with_residual else None, None, True)
    want = quantize_rows(normed)
    assert isinstance(got, Fp8Rows) and got.out_dtype == x.dtype
    assert torch.equal(got.values.float(), want.values.float()) and torch.equal(got.scales, want.scales)
    assert (got_stream is None) == (not with_residual) and (stream is None or torch.equal(got_stream, stream))
    gate_up = draw(4, 256, seed=9)
    product = quantize_rows(reference.silu_and_mul(gate_up))
    got_product = reference.silu_and_mul(gate_up, None, True)
    assert isinstance(got_product, Fp8Rows) and torch.equal(
        got_product.values.float(), product.values.float()
    )
    assert torch.equal(got_product.scales, product.scales)


def scaled_rows(rows: int, cols: int, seed: int, dtype: torch.dtype) -> ScaledRows:
    values = draw(rows, cols, seed=seed, dtype=dtype) * 100
    row_scales = draw(rows, 1, seed=seed + 1).abs() * 1e-2
    return ScaledRows(values, row_scales, draw(cols, seed=seed + 2).abs() * 1e-2)


def same(got: torch.Tensor | Fp8Rows | None, want: torch.Tensor | Fp8Rows | None) -> None:
    """Equal to the bit; float32 on a GPU to an ulp (the compiler may fuse a scaling multiply with the
    residual add into one FMA, which 16-bit models' rounding in between rules out)."""
    if isinstance(want, Fp8Rows) and ON_GPU and want.out_dtype == torch.float32:  # to one e4m3 step
        assert isinstance(got, Fp8Rows)
        got_values, want_values = got.values.float() * got.scales, want.values.float() * want.scales
        torch.testing.assert_close(got_values, want_values, rtol=0.125, atol=1e-6)
        return
    if isinstance(want, Fp8Rows):
        assert isinstance(got, Fp8Rows) and torch.equal(got.scales, want.scales)
        got, want = got.values.view(torch.uint8), want.values.view(torch.uint8)
    assert isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
    if ON_GPU and want.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-7, atol=0)
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_applies_a_gemm_output_scales_as_it_loads_it(
    dtype: torch.dtype, quantize: bool, with_residual: bool
) -> None:
    x = scaled_rows(6, 200, seed=10, dtype=dtype)
    residual = draw(6, 200, seed=13, dtype=dtype)
    weight = draw(200, seed=14).abs().to(dtype) + 0.5
    stream = residual.clone() if with_residual else None
    got, got_stream = norm.rms_norm(x, weight, 1e-6, stream, None, quantize)
    want_stream = residual.clone() if with_residual else None
    want, _ = norm.rms_norm(x.resolve(), weight, 1e-6, want_stream, None, quantize)
    same(got, want)
    if with_residual:
        same(got_stream, want_stream)
    reference_got, _ = reference.rms_norm(
        x, weight, 1e-6, residual if with_residual else None, None, quantize
    )
    reference_want, _ = reference.rms_norm(x.resolve(), weight, 1e-6, residual if with_residual else None)
    same(reference_got, quantize_rows(reference_want) if quantize else reference_want)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("quantize", [False, True])
def test_silu_and_mul_applies_gate_up_scales_as_it_loads_them(dtype: torch.dtype, quantize: bool) -> None:
    gate_up = scaled_rows(5, 2 * 1500, seed=20, dtype=dtype)  # gate's and up's column scales differ
    same(
        activation.silu_and_mul(gate_up, None, quantize),
        activation.silu_and_mul(gate_up.resolve(), None, quantize),
    )
    same(
        reference.silu_and_mul(gate_up, None, quantize),
        reference.silu_and_mul(gate_up.resolve(), None, quantize),
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("kv_cache_dtype", [None, FP8_DTYPE])
def test_rope_and_cache_apply_q_k_v_scales_as_they_load_them(
    dtype: torch.dtype, kv_cache_dtype: torch.dtype | None
) -> None:
    """q|k|v as one fp8 GEMM's `ScaledRows`, cut into heads as the attention cuts it: the rotated q and the
    cache written are those of its resolved rows, to the bit (and so in the reference)."""
    tokens, heads, kv_heads, head_dim = 5, 4, 2, 32
    qkv = scaled_rows(tokens, (heads + 2 * kv_heads) * head_dim, seed=40, dtype=dtype)
    sizes = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    positions, slots = torch.tensor([0, 5, 17, 3, 99]), torch.tensor([3, 9, 10, 0, 14])
    angles = torch.arange(128.0)[:, None] * (1.0 / 10000 ** (torch.arange(0, head_dim, 2) / head_dim))[None]
    qk_norm = (torch.rand(head_dim, dtype=dtype) + 0.5, torch.rand(head_dim, dtype=dtype) + 0.5, 1e-6)
    kv_scales = torch.tensor([0.02, 0.03]) if kv_cache_dtype is not None else None

    def run(op, parts: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        cache = torch.zeros(2, 4, 4, kv_heads, head_dim).to(kv_cache_dtype or dtype)
        q, k, v = (part.unflatten(-1, (-1, head_dim)) for part in parts)
        q = op(q, k, v, positions, angles.cos(), angles.sin(), cache, slots, qk_norm, kv_scales)
        return q.clone(), cache.view(torch.uint8)

    for op in (rope.norm_rope_and_cache, reference.norm_rope_and_cache):
        want_q, want_cache = run(op, qkv.resolve().split(sizes, dim=-1))
        fresh = ScaledRows(qkv.values.clone(), qkv.row_scales, qkv.col_scales)  # q is rotated in place
        got_q, got_cache = run(op, fresh.split(sizes))
        assert torch.equal(got_q, want_q) and torch.equal(got_cache, want_cache)


def loaded(method, inp: int = 128) -> QuantLinear:
    layer = QuantLinear(inp, (64, 32), False, method)
    layer.load("weight", draw(96, inp, seed=0) * 0.05, None)
    return layer


def test_only_fp8_per_channel_takes_fp8_rows_and_only_on_its_dense_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triton_gemms, "scaled_mm_scales", lambda device: "row")
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


def test_a_biased_layer_adds_its_bias_to_fp8_rows_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows a norm quantized multiply as the same rows quantized by the route would, bias included
    (q|k|v under Qwen2)."""
    monkeypatch.setattr(triton_gemms, "scaled_mm_scales", lambda device: "row")
    layer = QuantLinear(128, (96,), True, Fp8ChannelMethod())
    layer.load("weight", draw(96, 128, seed=50) * 0.05, None)
    layer.load("bias", draw(96, seed=51), None)
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    start = triton_gemms.DENSE_FROM_TOKENS["fp8-channel"]
    assert start is not None
    x = draw(start, 128, seed=52)
    rows = Fp8Rows(*fp8_quant.quantize_token_groups(x, 128), x.dtype)
    assert torch.equal(layer(rows), layer(x))
    assert not torch.equal(layer(rows), layer.product(rows))  # the bias is there


def test_only_fp8_per_channel_on_its_dense_route_leaves_its_scales(monkeypatch: pytest.MonkeyPatch) -> None:
    """`forward_scaled` gives `ScaledRows` from fp8 per channel's dense route (then resolving them gives the
    plain output to rounding), and plain rows below it, with a bias, from other formats and from a
    row-parallel shard (whose partial products are summed over the ranks)."""
    monkeypatch.setattr(triton_gemms, "scaled_mm_scales", lambda device: "row")
    fp8, int8 = loaded(Fp8ChannelMethod()), loaded(Int8WeightOnlyMethod())
    biased = QuantLinear(128, (96,), True, Fp8ChannelMethod())
    biased.load("weight", fp8.weight.float() * fp8.weight_scale[:, None], None)
    biased.load("bias", torch.zeros(96), None)
    row = ShardedLinear(128, [96], False, Fp8ChannelMethod(), TensorParallel(0, 1), "row", 1)
    row.load("weight", draw(96, 128, seed=0) * 0.05, None)
    triton_gemms.use_triton_gemms(nn.Sequential(fp8, int8, biased, row))
    start = triton_gemms.DENSE_FROM_TOKENS["fp8-channel"]
    assert start is not None
    x = draw(start, 128, seed=30)
    out = fp8.forward_scaled(x)
    assert isinstance(out, ScaledRows) and out.shape == (start, 96)
    torch.testing.assert_close(out.resolve(), fp8(x), rtol=1e-5, atol=1e-5)
    assert isinstance(fp8.forward_scaled(x[: start - 1]), torch.Tensor)
    for plain in (int8, biased, row):
        assert isinstance(plain.forward_scaled(x), torch.Tensor)


def test_a_gpu_without_row_wise_scales_scales_fp8_outputs_in_a_pass_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where torch._scaled_mm takes per-tensor scales only (cuBLASLt on some GPUs), fp8 per channel keeps its
    dense route: the unit-scaled product, left to the next kernel or scaled by a pass of its own."""
    monkeypatch.setattr(triton_gemms, "scaled_mm_scales", lambda device: "tensor")
    products: list[tuple[float, float, bool]] = []
    scaled_mm = torch._scaled_mm

    def per_tensor_only(a, b, scale_a, scale_b, out_dtype, use_fast_accum=False):
        products.append((scale_a.numel(), scale_b.numel(), use_fast_accum))
        return scaled_mm(
            a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype, use_fast_accum=use_fast_accum
        )

    monkeypatch.setattr(torch, "_scaled_mm", per_tensor_only)
    layer = loaded(Fp8ChannelMethod())
    start = triton_gemms.DENSE_FROM_TOKENS["fp8-channel"]
    assert start is not None
    x = draw(start, 128, seed=31)
    values, scales = fp8_quant.quantize_token_groups(x, 128)
    expected = (values.float() * scales) @ (layer.weight.float() * layer.weight_scale[:, None]).T
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    assert isinstance(layer.method.gemm, triton_gemms.RoutedGemm) and layer.takes_fp8_rows(start)
    # Hopper's fp8 tensor cores add products at less than float32's precision: 4.2e-4 off a float64
    # product of the same operands at |out| <= 2.2, where this float32 expectation is 3e-7 off (H100)
    tolerance = 2e-3 if ON_GPU else 1e-5
    torch.testing.assert_close(layer(x), expected, rtol=tolerance, atol=tolerance)
    scaled = layer.forward_scaled(x)
    assert isinstance(scaled, ScaledRows) and torch.equal(scaled.resolve(), layer(x))
    assert set(products) == {(1, 1, True)}  # unit scales, on cuBLASLt's fast-accumulation kernels


Routes = list[tuple[str, bool]]


def generate_fp8(
    tiny_model_dir,
    monkeypatch: pytest.MonkeyPatch,
    quantization: str | None = "fp8",
    setup: Callable[[LLM], None] = lambda llm: None,
) -> tuple[list, Routes]:
    """A 40-token prompt (every fp8 projection on its dense route), then one decode step (the GEMVs): the
    logprobs, and each prompt-step projection's route and whether its input came as `Fp8Rows`."""
    routes: Routes = []
    for name in ("scaled_mm_rows", "unscaled_mm_rows"):
        real = getattr(triton_gemms, name)

        def recorded(layer: QuantLinear, rows, _real=real, _name=name):
            routes.append((_name, isinstance(rows, Fp8Rows)))
            return _real(layer, rows)

        monkeypatch.setattr(triton_gemms, name, recorded)
    if not ON_GPU:
        monkeypatch.setattr(triton_gemms, "scaled_mm_scales", lambda device: "row")
    llm = LLM(
        str(tiny_model_dir("qwen3")), device=DEVICE.type, dtype="bfloat16" if ON_GPU else "float32",
        kernels="triton", quantization=quantization, num_kv_blocks=16, enforce_eager=True,
    )  # fmt: skip
    try:
        setup(llm)
        routes.clear()  # not the warm-up's calls
        params = SamplingParams(max_tokens=2, temperature=0.0, logprobs=5)
        return llm.generate([list(range(3, 43))], params)[0].outputs[0].logprobs, list(routes)
    finally:
        llm.shutdown()


LAYERS = 2  # the tiny model's


@pytest.mark.slow  # whole engines, each ~3.5 s under the Triton interpreter
def test_the_norms_and_silu_and_mul_hand_fp8_rows_to_q_k_v_gate_up_and_down(
    tiny_model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The norms and SiLU-and-mul quantize q|k|v's, gate|up's and down's input as they write it; o's
    input (attention's output) is quantized by the route. The logprobs are those of the same model with
    no producer quantizing, to the bit (the output scales applied by the GEMM in both runs)."""
    monkeypatch.setattr(triton_gemms.RoutedGemm, "scaled", triton_gemms.RoutedGemm.__call__)
    fused, routes = generate_fp8(tiny_model_dir, monkeypatch)
    assert [took for _, took in routes] == [True, False, True, True] * LAYERS  # q|k|v, o, gate|up, down
    monkeypatch.setattr(triton_gemms.RoutedGemm, "takes_fp8_rows", lambda self, tokens: False)
    unfused, routes = generate_fp8(tiny_model_dir, monkeypatch)
    assert [took for _, took in routes] == [False] * 4 * LAYERS
    assert fused == unfused


@pytest.mark.slow  # whole engines, each ~3.5 s under the Triton interpreter
@pytest.mark.parametrize("projection", [0, 2, 3])  # q|k|v, gate|up, down
def test_only_the_projection_that_takes_fp8_rows_gets_them(
    tiny_model_dir, monkeypatch: pytest.MonkeyPatch, projection: int
) -> None:
    """With one projection of the first layer taking fp8 rows, the kernel that writes its input, and no
    other, writes them."""
    taking: list[nn.Module] = []
    takes = QuantLinear.takes_fp8_rows
    monkeypatch.setattr(
        QuantLinear, "takes_fp8_rows", lambda self, tokens: self in taking and takes(self, tokens)
    )

    def choose(llm: LLM) -> None:
        first = llm.engine.runner.model.layers[0]
        attention, mlp = first.self_attn, first.mlp
        taking.append((attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj)[projection])

    _, routes = generate_fp8(tiny_model_dir, monkeypatch, setup=choose)
    assert [took for _, took in routes] == [index == projection for index in range(4 * LAYERS)]


@pytest.mark.slow  # whole engines, each ~3.5 s under the Triton interpreter
def test_every_projection_leaves_its_scales_to_the_kernel_that_reads_it(
    tiny_model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every projection's output reaches the kernel that reads it as `ScaledRows`: q|k|v's the RoPE/cache
    kernel, o's and down's the residual RMSNorm, gate|up's SiLU-and-mul. In float32 (CPU) the logprobs
    equal, to rounding, those of the model whose GEMMs scale every output. In bfloat16 (GPU) the two
    round differently, and each next projection's activation quantization can move an element by a whole
    e4m3 step, so each is held to the unquantized model instead: no further from it than the other."""
    deferred, routes = generate_fp8(tiny_model_dir, monkeypatch)
    per_layer = [("unscaled_mm_rows", True), ("unscaled_mm_rows", False)] + [("unscaled_mm_rows", True)] * 2
    assert routes == per_layer * LAYERS
    monkeypatch.setattr(triton_gemms.RoutedGemm, "scaled", triton_gemms.RoutedGemm.__call__)
    scaled, routes = generate_fp8(tiny_model_dir, monkeypatch)
    assert {name for name, _ in routes} == {"scaled_mm_rows"}
    if not ON_GPU:
        assert_logprobs_close(deferred, scaled, 1e-4)
        return
    unquantized, _ = generate_fp8(tiny_model_dir, monkeypatch, quantization=None)
    assert error(deferred, unquantized) <= 1.5 * error(scaled, unquantized) + 0.02


def assert_logprobs_close(
    got: list[dict[int, float]], want: list[dict[int, float]], tolerance: float
) -> None:
    for got_step, want_step in zip(got, want, strict=True):
        assert got_step.keys() == want_step.keys()
        assert all(abs(logprob - want_step[token]) < tolerance for token, logprob in got_step.items())


def error(got: list[dict[int, float]], want: list[dict[int, float]]) -> float:
    """Mean |logprob difference| over the tokens both report."""
    pairs = [(step[t], other[t]) for step, other in zip(got, want, strict=True) for t in step.keys() & other]
    return sum(abs(a - b) for a, b in pairs) / len(pairs)


def compile_kernels(capability: int) -> None:
    """The variants that quantize their output or scale their input build for an fp8 GPU."""
    bf16, u8, f32, ints = (
        torch.empty(1, dtype=d) for d in (torch.bfloat16, torch.uint8, torch.float32, torch.int32)
    )
    for n_cols, scaled, quantize in [(1024, False, True), (4096, True, True), (4096, True, False)]:
        compile_for(
            norm._add_rms_norm_kernel, capability, {"num_warps": 4 if n_cols <= 2048 else 8}, True,
            x_ptr=bf16, residual_ptr=bf16, weight_ptr=bf16, out_ptr=u8 if quantize else bf16,
            residual_out_ptr=bf16, scale_ptr=f32, x_row_scale_ptr=f32, x_col_scale_ptr=f32, stride_x=n_cols,
            stride_r=n_cols, stride_o=n_cols, n_cols=n_cols, eps=1e-6, h_ptr=bf16, b_ptr=bf16, slots_ptr=ints,
            ranks_ptr=ints, stride_h=0, stride_h_slot=0, stride_b_slot=0, stride_b_rank=0, HAS_RESIDUAL=True,
            HAS_LORA=False, SCALED=scaled, QUANTIZE=quantize, BLOCK=n_cols, BLOCK_R=1,
        )  # fmt: skip
    compile_for(
        rope._norm_rope_cache_kernel, capability, {"num_warps": 4}, True, q_ptr=bf16, k_ptr=bf16, v_ptr=bf16,
        positions_ptr=ints, slots_ptr=torch.empty(1, dtype=torch.int64), cos_ptr=f32, sin_ptr=f32, q_norm_ptr=bf16,
        k_norm_ptr=bf16, k_cache_ptr=u8, v_cache_ptr=u8, k_scale_ptr=f32, v_scale_ptr=f32, row_scale_ptr=f32,
        q_col_scale_ptr=f32, k_col_scale_ptr=f32, v_col_scale_ptr=f32, eps=1e-6, stride_qt=6144, stride_qh=128,
        stride_kt=6144, stride_kh=128, stride_vt=6144, stride_vh=128, stride_cs=1024, stride_ch=128,
        NUM_HEADS=32, NUM_KV_HEADS=8, BLOCK_H=32, BLOCK_KV=8, HALF=64, QK_NORM=True, KV_QUANT=0, SCALED=True,
    )  # fmt: skip
    compile_for(
        activation._silu_and_mul_kernel, capability, {"num_warps": 4}, True, in_ptr=bf16, out_ptr=bf16,
        row_scale_ptr=f32, col_scale_ptr=f32, stride_in=2 * 9728, stride_out=9728, width=9728, SCALED=True,
        BLOCK=1024,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("capability", [c for c in ARCHITECTURES.values() if c >= 89])
def test_the_quantizing_kernels_compile_for_fp8_gpus(capability: int) -> None:
    run_compiled("tests.test_fp8_rows:compile_kernels", capability)
