"""Each quantized GEMM kernel equals its PyTorch reference: every format, odd shapes, split-K on and off.

On CI the kernels run through Triton's interpreter (float32 and float16 activations; its bf16 matmul and
float->fp8 rounding are broken); on a GPU (`TRITON_INTERPRET=0`) the same tests run compiled, bf16 too.
"""

from __future__ import annotations

import os

import pytest
import torch

from tokenmill.kernels.triton import weight_only_gemm as wo
from tokenmill.quantization.awq import dequantize_awq, quantize_awq
from tokenmill.quantization.fp8 import quantize_fp8_per_channel
from tokenmill.quantization.gptq import dequantize_gptq, quantize_gptq
from tokenmill.quantization.int8 import quantize_int8_per_channel

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = [torch.float32, torch.float16, *([torch.bfloat16] if ON_GPU else [])]
TOKENS = [1, 5, 33]


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def draw(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator(DEVICE).manual_seed(seed), device=DEVICE)


def close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    tolerance = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    torch.testing.assert_close(got.float(), expected.float(), atol=tolerance, rtol=tolerance)


def packed_int8(out: int, inp: int) -> tuple[wo.PackedWeight, torch.Tensor]:
    quantized, scale = quantize_int8_per_channel(draw(out, inp, seed=1) * 0.05)
    packed = wo.PackedWeight(wo.WeightFormat.INT8, quantized, scale, inp, out)
    return packed, (quantized.float() * scale[:, None]).T


def packed_fp8(out: int, inp: int) -> tuple[wo.PackedWeight, torch.Tensor]:
    quantized, scale = quantize_fp8_per_channel(draw(out, inp, seed=2) * 0.05)
    return wo.PackedWeight(wo.WeightFormat.FP8, quantized, scale, inp, out), (
        quantized.float() * scale[:, None]
    ).T


def packed_awq(out: int, inp: int, group: int = 40) -> tuple[wo.PackedWeight, torch.Tensor]:
    qweight, qzeros, scales = quantize_awq(draw(out, inp, seed=3) * 0.05, group)
    packed = wo.PackedWeight(wo.WeightFormat.AWQ, qweight, scales, inp, out, zeros=qzeros, group_size=group)
    return packed, dequantize_awq(qweight, qzeros, scales)


def packed_gptq(out: int, inp: int, bits: int, act_order: bool) -> tuple[wo.PackedWeight, torch.Tensor]:
    order = torch.randperm(inp, generator=torch.Generator(DEVICE).manual_seed(5), device=DEVICE)
    tensors = quantize_gptq(draw(out, inp, seed=4) * 0.05, bits, 40, order if act_order else None)
    packed = wo.PackedWeight(
        wo.WeightFormat.GPTQ,
        tensors["qweight"],
        tensors["scales"],
        inp,
        out,
        tensors["qzeros"],
        tensors["g_idx"],
        bits,
    )
    return packed, dequantize_gptq(tensors, bits)


FORMATS = {
    "int8": lambda out, inp: packed_int8(out, inp),
    "fp8": lambda out, inp: packed_fp8(out, inp),
    "awq": lambda out, inp: packed_awq(out, inp),
    "gptq4": lambda out, inp: packed_gptq(out, inp, 4, act_order=False),
    "gptq4-act-order": lambda out, inp: packed_gptq(out, inp, 4, act_order=True),
    "gptq8-act-order": lambda out, inp: packed_gptq(out, inp, 8, act_order=True),
}


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("split_k", [1, 2])
@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_weight_only_gemm_equals_the_dequantized_reference(kind: str, split_k: int, tokens: int) -> None:
    packed, weight = FORMATS[kind](96, 320)  # K = 320: a partial last K tile, splits of unequal length
    x = draw(tokens, 320, seed=6)
    close(wo.weight_only_gemm(x, packed, split_k), x @ weight, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["int8", "awq", "gptq4-act-order"])
def test_weight_only_gemm_in_half_precision_and_odd_sizes(kind: str, dtype: torch.dtype) -> None:
    packed, weight = FORMATS[kind](88, 200)  # neither a multiple of the tiles
    x = draw(5, 200, seed=7).to(dtype)
    got = wo.weight_only_gemm(x, packed, split_k=3)
    assert got.dtype == dtype and got.shape == (5, 88)
    close(got, x.float() @ weight, dtype)


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_dequantize_kernel_equals_the_reference(kind: str) -> None:
    packed, weight = FORMATS[kind](96, 200)
    torch.testing.assert_close(wo.dequantize(packed, torch.float32), weight, rtol=1e-6, atol=1e-6)


def test_split_k_is_chosen_only_when_tiles_leave_sms_idle() -> None:
    assert wo.choose_split_k(tiles=200, k=4096, block_k=128, num_sms=132) == 1
    assert wo.choose_split_k(tiles=32, k=4096, block_k=128, num_sms=132) == 5
    assert wo.choose_split_k(tiles=1, k=4096, block_k=128, num_sms=132) == 8  # >= 4 K blocks per split
    assert wo.choose_split_k(tiles=1, k=256, block_k=128, num_sms=132) == 1
