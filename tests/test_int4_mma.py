"""The tensor-core 4-bit GEMV (`int4_mma`). On a GPU of sm_80+ it gives the unfused ops' results (x, its
RMSNorm or SiLU-and-mul, times the dequantized AWQ weight, + bias, + residual) for 2 to 16 token rows in
bf16 and fp16, with K split or not, and the GEMVs route to it; Triton's interpreter cannot run its inline
PTX, so on the CPU it is never chosen and is only compiled, for every GPU generation, without spills at
one token block."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, resource_usage, run_compiled
from tests.test_quant_kernels import DEVICE, ON_GPU, _pointer, draw, packed_awq, packed_gptq
from tests.test_quant_routes import loaded
from tokenmill.kernels import reference
from tokenmill.kernels.triton import gemv_fusion, int4_gemv, int4_mma, quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization import QuantLinear, triton_gemms
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.warm_up import compile_gemm_variants

RUNS_MMA = ON_GPU and torch.cuda.get_device_capability() >= (8, 0)
needs_mma = pytest.mark.skipif(not RUNS_MMA, reason="inline PTX mma needs a GPU of sm_80 or later")
OUT, IN = 256, 512  # two programs of 128 outputs; four K steps of 128 (AWQ groups of 128)


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _fused_and_unfused(rows: int, prologue: str, dtype: torch.dtype, seed: int):
    """The mma GEMV of `rows` rows with `prologue` ("none", "norm" or "silu_mul"), a bias and the
    residual fused in, and the unfused ops on the same inputs in float32 (rounded where they round)."""
    packed, weight = packed_awq(OUT, IN, 128)
    bias = (draw(OUT, seed=seed + 1) * 0.1).to(dtype)
    residual = draw(rows, OUT, seed=seed + 2).to(dtype)
    if prologue == "norm":
        x, norm = draw(rows, IN, seed=seed).to(dtype), ((torch.rand(IN) + 0.5).to(dtype), 1e-6)
        fusion = Fusion(norm=norm, bias=bias, residual=residual)
        inputs = reference.rms_norm(x, *norm)[0]
    elif prologue == "silu_mul":
        x = draw(rows, 2 * IN, seed=seed).to(dtype)
        fusion = Fusion(silu_mul=True, bias=bias, residual=residual)
        inputs = reference.silu_and_mul(x)
    else:
        x = draw(rows, IN, seed=seed).to(dtype)
        fusion, inputs = Fusion(bias=bias, residual=residual), x
    expected = (inputs.float() @ weight + bias.float()).to(dtype) + residual
    return int4_mma.gemv(x, packed, fusion), expected, packed, x, fusion


@needs_mma
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("prologue", ["none", "norm", "silu_mul"])
@pytest.mark.parametrize("rows", [2, 3, 8, 11, 16])
@pytest.mark.parametrize("sms", [0, 2, 132])  # one program a tile (4 K steps), 2 splits of 2, 4 of 1
def test_mma_gemv_equals_the_unfused_ops(
    rows: int, prologue: str, dtype: torch.dtype, sms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Products of exact weights and exactly rounded activations summed in fp32: within two units of
    the output's last place of the float32 reference; the same bits again on a second launch (split K's
    arrival counts were reset), and close to `int4_gemv`'s sums of the same inputs."""
    monkeypatch.setattr(int4_mma, "num_sms", lambda device: sms)
    assert int4_mma.launch_shape(OUT, IN, sms)[1] == {0: 1, 2: 2, 132: 4}[sms]
    got, expected, packed, x, fusion = _fused_and_unfused(rows, prologue, dtype, seed=rows)
    bound = (2**-6 if dtype == torch.bfloat16 else 2**-9) * expected.float().abs().max().item()  # 2 ulps
    torch.testing.assert_close(got.float(), expected.float(), atol=bound, rtol=0)
    assert torch.equal(int4_mma.gemv(x, packed, fusion), got)
    assert not gemv_fusion.split_scratch(x.device)["count_ptr"].any()
    tree = int4_gemv.gemv(x, packed, fusion).float()
    torch.testing.assert_close(got.float(), tree, atol=1e-2 * tree.abs().max().item(), rtol=0)


@needs_mma
@pytest.mark.parametrize("rows", [2, 9])
def test_gptq_weights_in_groups_of_256_equal_their_reference(rows: int) -> None:
    """GPTQ's stored zero points (minus one) and a group spanning two K steps."""
    packed, weight = packed_gptq(OUT, IN, 4, False, 256)
    x = draw(rows, IN, seed=rows).to(torch.bfloat16)
    expected = (x.float() @ weight).to(torch.bfloat16).float()
    got = int4_mma.gemv(x, packed, Fusion()).float()
    torch.testing.assert_close(got, expected, atol=2**-6 * expected.abs().max().item(), rtol=0)


@needs_mma
def test_the_4_bit_gemv_takes_the_tensor_cores_from_2_to_16_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    packed, _ = packed_awq(OUT, IN, 128)
    launched: list[int] = []
    real = int4_mma.gemv
    monkeypatch.setattr(int4_mma, "gemv", lambda x, *args: launched.append(len(x)) or real(x, *args))
    for rows in (1, 2, 16, 17):
        quant_gemv.gemv(draw(rows, IN, seed=rows).to(torch.bfloat16), packed)
    quant_gemv.gemv(draw(2, IN, seed=2), packed)  # float32 activations: the tree's portable path
    assert launched == [2, 16]


def test_the_interpreter_and_the_cpu_never_take_it() -> None:
    packed, _ = packed_awq(OUT, IN, 128)
    x = draw(2, IN, seed=5).to(torch.float16)
    assert int4_mma.supports(x, packed) == RUNS_MMA
    assert not int4_mma.supports(draw(17, IN, seed=6).to(torch.float16), packed)
    assert not int4_mma.supports(draw(1, IN, seed=6).to(torch.float16), packed)


@pytest.mark.parametrize(
    ("method", "sizes", "key"),
    [
        (lambda: AwqMethod(128, checkpoint_is_awq=True), (512, 256), "gptq4-mma"),
        (lambda: GptqMethod(4, 128, checkpoint_is_gptq=True), (512, 256), "gptq4-mma"),
        (lambda: GptqMethod(4, -1, checkpoint_is_gptq=True), (512, 256), "gptq4-mma"),
        (lambda: GptqMethod(4, -1, checkpoint_is_gptq=True), (320, 256), "gptq4"),  # one group of 320
        (lambda: AwqMethod(128, checkpoint_is_awq=True), (512, 192), "gptq4"),  # not whole programs
        (lambda: GptqMethod(4, 128, checkpoint_is_gptq=True, act_order=True), (512, 256), "gptq-act-order"),
        (lambda: GptqMethod(4, 64, checkpoint_is_gptq=True), (512, 256), "gptq4"),
        (lambda: GptqMethod(8, 128, checkpoint_is_gptq=True), (512, 256), "gptq8"),
    ],
)
def test_4_bit_layers_the_mma_gemv_serves_run_their_gemv_to_16_rows(method, sizes, key: str) -> None:
    """Where the mma GEMV runs (sm_80+, compiled), 4-bit layers it takes (row-ordered groups in whole K
    steps, whole programs of outputs) keep their GEMV up to 16 rows (it costs what one row does); other
    layers, and every layer elsewhere, stop at their own table entry (4-bit: 3, 8-bit: 1) and leave
    larger batches to the weight-only GEMM; act-order layers have none (the dense route runs them)."""
    layer = QuantLinear(sizes[0], [sizes[1]], False, method())
    gemm = triton_gemms.gemm_for(layer, DEVICE)
    expected = key if RUNS_MMA else key.removesuffix("-mma")
    assert gemm.table_key == expected
    assert (gemm.gemv_up_to() == int4_mma.MAX_ROWS) == (expected == "gptq4-mma")
    assert gemm.gemv_up_to() <= int4_mma.MAX_ROWS


def test_warm_up_compiles_each_gemv_variant_and_the_fused_path_s_residual_one() -> None:
    """`int4_gemv` at 1 row, one and two mma blocks at 2 and 9, each through the routed GEMM; the fused
    small-batch path's variant (a residual in its epilogue) at 2 rows, which graph capture compiles only
    where a decode batch of 2-8 is captured, while a prompt's last few tokens can take it anyway."""
    gemvs: list[tuple[int, bool]] = []

    def gemv(layer: QuantLinear, x: torch.Tensor, fusion: Fusion) -> torch.Tensor:
        gemvs.append((len(x), fusion.residual is not None))
        return x.new_zeros(len(x), layer.out_features)

    def kernel(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(x), layer.out_features)

    with torch.device("cpu"):  # no kernel runs: the routes are recorded
        layer = loaded(AwqMethod(128, checkpoint_is_awq=False), inp=256, shards=(128,))
    layer.method.gemm = gemm = triton_gemms.RoutedGemm("gptq4-mma", kernel, kernel, gemv)
    assert gemm.variant_tokens()[:3] == (1, 2, 9)
    compile_gemm_variants(layer, torch.float32)
    assert list(dict.fromkeys(gemvs)) == [(1, False), (2, False), (2, True), (9, False)]  # (`scaled` repeats)


def test_warm_up_compiles_a_biased_layer_s_fused_gemv_with_its_bias_and_no_residual() -> None:
    """q|k|v with a bias (Qwen2) takes the fused path's GEMV with its bias and no residual (the RMSNorm
    runs first): the warm-up launches that epilogue too, not only the bias-and-residual one."""
    epilogues: set[tuple[int, bool, bool]] = set()

    def gemv(layer: QuantLinear, x: torch.Tensor, fusion: Fusion) -> torch.Tensor:
        epilogues.add((len(x), fusion.bias is not None, fusion.residual is not None))
        return x.new_zeros(len(x), layer.out_features)

    def kernel(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(x), layer.out_features)

    with torch.device("cpu"):  # no kernel runs: the routes are recorded
        layer = QuantLinear(256, [128], True, AwqMethod(128, checkpoint_is_awq=False))
    layer.method.gemm = triton_gemms.RoutedGemm("gptq4-mma", kernel, kernel, gemv)
    compile_gemm_variants(layer, torch.float32)
    assert {(2, True, False), (2, True, True)} <= epilogues


@pytest.mark.parametrize("prologue", ["none", "norm", "silu_mul"])
def test_a_weight_stored_in_another_input_order_gets_the_prologue_output_gathered(
    prologue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Act-order layers stored in group order (`Fusion.input_order`): the kernel reads the prologue's
    output with its columns in that order. A stand-in kernel records what it is given (the interpreter
    cannot run the mma's PTX)."""
    given: dict[str, torch.Tensor] = {}

    class Recorder:
        def __getitem__(self, grid):
            return lambda **kwargs: given.update(x=kwargs["x_ptr"].clone())

    monkeypatch.setattr(int4_mma, "_int4_mma_kernel", Recorder())
    monkeypatch.setattr(int4_mma, "supports", lambda x, weight: True)
    packed, _ = packed_awq(OUT, IN, 128)
    order = torch.randperm(IN, generator=torch.Generator(DEVICE).manual_seed(9), device=DEVICE)
    x = draw(3, 2 * IN if prologue == "silu_mul" else IN, seed=10)
    norm = (torch.rand(IN, device=DEVICE) + 0.5, 1e-6) if prologue == "norm" else None
    int4_mma.gemv(x, packed, Fusion(norm=norm, silu_mul=prologue == "silu_mul", input_order=order))
    if prologue == "norm":
        expected = reference.rms_norm(x, *norm)[0]
    else:
        expected = reference.silu_and_mul(x) if prologue == "silu_mul" else x
    torch.testing.assert_close(given["x"], expected[:, order], atol=1e-5, rtol=1e-5)


def test_launch_shape_splits_k_to_fill_the_sms_within_the_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert int4_mma.launch_shape(24576, 4096, 132) == (192, 2)  # Qwen3-8B gate|up
    assert int4_mma.launch_shape(6144, 4096, 132) == (48, 8)  # q|k|v
    assert int4_mma.launch_shape(4096, 12288, 132) == (32, 16)  # down: 96 K steps, 6 a split
    assert int4_mma.launch_shape(4096, 256, 132) == (32, 2)  # two K steps
    assert int4_mma.launch_shape(4096, 4096, 0) == (32, 1)
    monkeypatch.setattr(gemv_fusion, "PARTIAL_ELEMENTS", 1 << 18)  # two token blocks' sums must fit
    assert int4_mma.launch_shape(4096, 4096, 132) == (32, 4)


@pytest.mark.slow
@pytest.mark.parametrize("capability", sorted(ARCHITECTURES.values()))
def test_mma_gemv_compiles_for_every_gpu_generation(capability: int) -> None:
    run_compiled("tests.test_int4_mma:compile_every_variant", capability)


def compile_every_variant(capability: int) -> None:
    """Each dtype and epilogue, split or not, one and two token blocks; one token block spills nothing."""
    i32, f32 = _pointer(torch.int32), _pointer(torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        half = _pointer(dtype)
        for split, blocks, epilogue in ((1, 1, False), (8, 1, True), (2, 2, True), (1, 2, False)):
            cubin = compile_for(
                int4_mma._int4_mma_kernel, capability, options={"num_warps": int4_mma.WARPS}, aligned=True,
                x_ptr=half, w_ptr=i32, scale_ptr=_pointer(torch.float16), zero_ptr=i32, out_ptr=half,
                bias_ptr=half, residual_ptr=half, partial_ptr=f32, count_ptr=i32, rows=3, steps_per_split=4,
                stride_x=4096, stride_wk=4096, stride_sg=4096, stride_zg=512, stride_o=4096, stride_r=4096,
                ZERO_OFFSET=0, GROUP=128, SPLIT=split, TOKEN_BLOCKS=blocks, HAS_BIAS=epilogue,
                HAS_RESIDUAL=epilogue, WARPS=int4_mma.WARPS,
            )  # fmt: skip
            if blocks == 1:
                assert resource_usage(cubin)["STACK"] == 0, (dtype, split, epilogue)
