"""The one-token e4m3 GEMV on the tensor cores (`fp8_mma`). On a GPU of sm_89+ it gives the unfused ops'
results (x, its RMSNorm or SiLU-and-mul, times the dequantized weight, + bias, + residual) in bf16 and
fp16, with K split or not, and one-token fp8 GEMVs route to it; Triton's interpreter cannot run its inline
PTX, so on the CPU it is never chosen and is only compiled, for every GPU generation with fp8 conversions,
without spills."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, resource_usage, run_compiled
from tests.test_quant_kernels import DEVICE, ON_GPU, _pointer, draw, packed_fp8
from tokenmill.kernels import reference
from tokenmill.kernels.triton import fp8_gemv, fp8_mma, gemv_fusion, quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion

RUNS_MMA = ON_GPU and torch.cuda.get_device_capability() >= (8, 9)
needs_mma = pytest.mark.skipif(not RUNS_MMA, reason="fp8 conversions and mma need a GPU of sm_89 or later")
OUT, IN = 256, 1024  # four programs of 64 outputs; eight K steps of 128


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _fused_and_unfused(prologue: str, dtype: torch.dtype, seed: int):
    """The mma GEMV of one row with `prologue` ("none", "norm" or "silu_mul"), a bias and the residual
    fused in, and the unfused ops on the same inputs in float32 (rounded where they round)."""
    packed, weight = packed_fp8(OUT, IN)
    bias = (draw(OUT, seed=seed + 1) * 0.1).to(dtype)
    residual = draw(1, OUT, seed=seed + 2).to(dtype)
    if prologue == "norm":
        x, norm = draw(1, IN, seed=seed).to(dtype), ((torch.rand(IN) + 0.5).to(dtype), 1e-6)
        fusion = Fusion(norm=norm, bias=bias, residual=residual)
        inputs = reference.rms_norm(x, *norm)[0]
    elif prologue == "silu_mul":
        x = draw(1, 2 * IN, seed=seed).to(dtype)
        fusion = Fusion(silu_mul=True, bias=bias, residual=residual)
        inputs = reference.silu_and_mul(x)
    else:
        x = draw(1, IN, seed=seed).to(dtype)
        fusion, inputs = Fusion(bias=bias, residual=residual), x
    expected = (inputs.float() @ weight + bias.float()).to(dtype) + residual
    return fp8_mma.gemv(x, packed.weight, packed.scales, fusion), expected, packed, x, fusion


@needs_mma
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("prologue", ["none", "norm", "silu_mul"])
@pytest.mark.parametrize("sms", [0, 2, 132])  # one program a tile (8 K steps), 2 splits of 4, 8 of 1
def test_mma_gemv_equals_the_unfused_ops(
    prologue: str, dtype: torch.dtype, sms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact products of e4m3 weights and f16 activations summed in fp32: within two units of the
    output's last place of the float32 reference; the same bits again on a second launch (split K's
    arrival counts were reset), and close to `fp8_gemv`'s fp32 sums of the same inputs."""
    monkeypatch.setattr(fp8_mma, "num_sms", lambda device: sms)
    assert fp8_mma.launch_shape(OUT, IN, sms)[1] == {0: 1, 2: 2, 132: 8}[sms]
    got, expected, packed, x, fusion = _fused_and_unfused(prologue, dtype, seed=7)
    bound = (2**-6 if dtype == torch.bfloat16 else 2**-9) * expected.float().abs().max().item()  # 2 ulps
    torch.testing.assert_close(got.float(), expected.float(), atol=bound, rtol=0)
    assert torch.equal(fp8_mma.gemv(x, packed.weight, packed.scales, fusion), got)
    assert not gemv_fusion.split_scratch(x.device)["count_ptr"].any()
    cores = fp8_gemv.gemv(x, packed.weight, packed.scales, fusion).float()
    torch.testing.assert_close(got.float(), cores, atol=bound, rtol=0)


@needs_mma
def test_one_token_fp8_gemvs_take_the_tensor_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    packed, _ = packed_fp8(OUT, IN)
    launched: list[int] = []
    real = fp8_mma.gemv
    monkeypatch.setattr(fp8_mma, "gemv", lambda x, *args: launched.append(len(x)) or real(x, *args))
    for rows in (1, 2):
        quant_gemv.gemv(draw(rows, IN, seed=rows).to(torch.bfloat16), packed)
    quant_gemv.gemv(draw(1, IN, seed=3), packed)  # float32 activations: `fp8_gemv`
    assert launched == [1]


def test_the_interpreter_and_the_cpu_never_take_it() -> None:
    packed, _ = packed_fp8(OUT, IN)
    odd, _ = packed_fp8(88, IN)  # not whole programs of outputs
    x = draw(1, IN, seed=5).to(torch.float16)
    assert fp8_mma.supports(x, packed.weight) == RUNS_MMA
    assert not fp8_mma.supports(draw(2, IN, seed=6).to(torch.float16), packed.weight)
    assert not fp8_mma.supports(x, odd.weight)
    assert not fp8_mma.supports(x.float(), packed.weight)


def test_launch_shape_splits_k_to_four_programs_an_sm() -> None:
    assert fp8_mma.launch_shape(24576, 4096, 132) == (384, 2)  # Qwen3-8B gate|up
    assert fp8_mma.launch_shape(6144, 4096, 132) == (96, 8)  # q|k|v
    assert fp8_mma.launch_shape(4096, 12288, 132) == (64, 16)  # down
    assert fp8_mma.launch_shape(4096, 256, 132) == (64, 2)  # two K steps: one a split
    assert fp8_mma.launch_shape(4096, 4096, 0) == (64, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "capability", [ARCHITECTURES["ada"], ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]]
)
def test_mma_gemv_compiles_for_every_gpu_generation_with_fp8(capability: int) -> None:
    run_compiled("tests.test_fp8_mma:compile_every_variant", capability)


def compile_every_variant(capability: int) -> None:
    """Each activation dtype, prologue and epilogue, split or not, without spills."""
    i32, f32 = _pointer(torch.int32), _pointer(torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        half = _pointer(dtype)
        for prologue, split, epilogue in ((0, 1, False), (1, 8, False), (2, 16, True), (0, 2, True)):
            cubin = compile_for(
                fp8_mma._fp8_mma_kernel, capability, options={"num_warps": fp8_mma.WARPS}, aligned=True,
                x_ptr=half, w_ptr=i32, scale_ptr=f32, out_ptr=half, norm_weight_ptr=half, bias_ptr=half,
                residual_ptr=half, partial_ptr=f32, count_ptr=i32, K=4096, steps_per_split=4, stride_w=1024,
                stride_r=0, eps=1e-6, SPLIT=split, PROLOGUE=prologue, HAS_BIAS=epilogue, HAS_RESIDUAL=epilogue,
                NORM_BLOCK=1024, WARPS=fp8_mma.WARPS,
            )  # fmt: skip
            assert resource_usage(cubin)["STACK"] == 0, (dtype, prologue, split, epilogue)
