"""Each quantized GEMM kernel equals its PyTorch reference: every format, odd shapes, split-K on and off.

On CI the kernels run through Triton's interpreter (float32 and float16 activations; its bf16 matmul and
float->fp8 rounding are broken); on a GPU (`TRITON_INTERPRET=0`) the same tests run compiled, bf16 too.
"""

from __future__ import annotations

import functools
import itertools
import os

import pytest
import torch
from torch import nn

from tests.helpers.gpu_compile import (
    ARCHITECTURES,
    SHARED_MEMORY_LIMIT,
    compile_for,
    compiled_for,
    run_compiled,
)
from tests.helpers.quantized_models import save_awq_checkpoint, save_fp8_checkpoint, save_gptq_checkpoint
from tokenmill import LLM, SamplingParams
from tokenmill.kernels.triton import fp8_gemm, fp8_quant, quant_gemv
from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton import weight_only_gemm as wo
from tokenmill.kernels.triton.split_k import choose_split_k
from tokenmill.quantization import QuantLinear, QuantMethod, UnquantizedMethod, fp8_routes, triton_gemms
from tokenmill.quantization import fp8 as reference_fp8
from tokenmill.quantization.awq import AwqMethod, dequantize_awq, quantize_awq, repack_awq
from tokenmill.quantization.fp8 import (
    Fp8BlockMethod,
    Fp8ChannelMethod,
    dequantize_fp8_blocks,
    quantize_fp8_blocks,
    quantize_fp8_per_channel,
)
from tokenmill.quantization.gptq import GptqMethod, dequantize_gptq, quantize_gptq
from tokenmill.quantization.int8 import Int8WeightOnlyMethod, quantize_int8_per_channel

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = [torch.float32, torch.float16, *([torch.bfloat16] if ON_GPU else [])]
NEEDS_FP8 = pytest.mark.skipif(
    ON_GPU and not fp8_gemm.has_fp8_dot(DEVICE), reason="this GPU has no fp8 (sm_89+ needed)"
)


def skip_without_fp8_dot(fp8_dot: bool) -> None:
    if fp8_dot and ON_GPU and not fp8_gemm.has_fp8_dot(DEVICE):
        pytest.skip("this GPU has no fp8 dot (sm_89+ needed)")


def exact_fp8_activations(tokens: int, features: int, group: int, seed: int) -> torch.Tensor:
    """Activations whose per-token-group fp8 quantization is exact: e4m3 values with each group's
    largest 448, times 2^-6, so every scale is a power of two and no element rounds. Otherwise a scale
    an ulp apart (amax / 448 computed in another order) flips elements lying on a rounding boundary."""
    values = (draw(tokens, features, seed=seed) * 100).to(torch.float8_e4m3fn).float()
    values[:, ::group] = 448.0
    return values * 2**-6


# (tokens, split_k): one tile row or several, split-K off and on; the fast layer runs 5 tokens only
SHAPES = [pytest.param(1, 1, marks=pytest.mark.slow), (5, 3), pytest.param(33, 2, marks=pytest.mark.slow)]


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def draw(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator(DEVICE).manual_seed(seed), device=DEVICE)


def close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    tolerance = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    torch.testing.assert_close(got.float(), expected.float(), atol=tolerance, rtol=tolerance)


def close_after_fp8_dots(got: torch.Tensor, expected: torch.Tensor) -> None:
    """fp8 tensor-core products accumulate with a shortened mantissa within each K block (Hopper's fp8
    MMA): these tests saw absolute differences up to 1.3e-3 from the fp32 reference on an H100 and an
    H200. A wrong scale or block is off by a factor, far beyond 4e-3 of the output's range; on the CPU
    the interpreter's products are exact to 1e-4."""
    bound = 4e-3 * expected.abs().max().item() if ON_GPU else 1e-4
    torch.testing.assert_close(got.float(), expected.float(), atol=bound, rtol=0)


def packed_int8(out: int, inp: int) -> tuple[wf.PackedWeight, torch.Tensor]:
    quantized, scale = quantize_int8_per_channel(draw(out, inp, seed=1) * 0.05)
    packed = wf.PackedWeight(wf.WeightFormat.INT8, quantized, scale, inp, out)
    return packed, (quantized.float() * scale[:, None]).T


def packed_fp8(out: int, inp: int) -> tuple[wf.PackedWeight, torch.Tensor]:
    quantized, scale = quantize_fp8_per_channel(draw(out, inp, seed=2) * 0.05)
    return wf.PackedWeight(wf.WeightFormat.FP8, quantized, scale, inp, out), (
        quantized.float() * scale[:, None]
    ).T


def packed_awq(out: int, inp: int, group: int = 40) -> tuple[wf.PackedWeight, torch.Tensor]:
    """AWQ tensors as the kernels read them (repacked into GPTQ's layout, zero points as they are), and
    the weight AWQ's own layout dequantizes to."""
    qweight, qzeros, scales = quantize_awq(draw(out, inp, seed=3) * 0.05, group)
    g_idx = (torch.arange(inp) // group).to(torch.int32)
    packed = wf.PackedWeight(
        wf.WeightFormat.GPTQ, repack_awq(qweight, "qweight"), scales, inp, out, repack_awq(qzeros, "qzeros"),
        g_idx, 4, group, groups_in_row_order=True, zero_offset=0,
    )  # fmt: skip
    return packed, dequantize_awq(qweight, qzeros, scales)


def packed_gptq(
    out: int, inp: int, bits: int, act_order: bool, group: int = 40
) -> tuple[wf.PackedWeight, torch.Tensor]:
    order = torch.randperm(inp, generator=torch.Generator(DEVICE).manual_seed(5), device=DEVICE)
    tensors = quantize_gptq(draw(out, inp, seed=4) * 0.05, bits, group, order if act_order else None)
    packed = wf.PackedWeight(
        wf.WeightFormat.GPTQ, tensors["qweight"], tensors["scales"], inp, out, tensors["qzeros"],
        tensors["g_idx"], bits, group, groups_in_row_order=not act_order,
    )  # fmt: skip
    return packed, dequantize_gptq(tensors, bits)


FORMATS = {
    "int8": lambda out, inp: packed_int8(out, inp),
    "fp8": lambda out, inp: packed_fp8(out, inp),
    "awq": lambda out, inp: packed_awq(out, inp),
    "gptq4": lambda out, inp: packed_gptq(out, inp, 4, act_order=False),
    "gptq4-act-order": lambda out, inp: packed_gptq(out, inp, 4, act_order=True),
    "gptq8-act-order": lambda out, inp: packed_gptq(out, inp, 8, act_order=True),
}


# the fast layer runs int8, fp8, awq and gptq4-act-order; gptq4 and gptq8-act-order run in the slow one
FORMAT_PARAMS = [
    pytest.param(kind, marks=pytest.mark.slow) if kind in ("gptq4", "gptq8-act-order") else kind
    for kind in sorted(FORMATS)
]


@pytest.mark.parametrize(("tokens", "split_k"), SHAPES)
@pytest.mark.parametrize("kind", FORMAT_PARAMS)
def test_weight_only_gemm_equals_the_dequantized_reference(kind: str, split_k: int, tokens: int) -> None:
    packed, weight = FORMATS[kind](96, 320)  # K = 320: a partial last K tile, splits of unequal length
    x = draw(tokens, 320, seed=6)
    close(wo.weight_only_gemm(x, packed, split_k), x @ weight, torch.float32)


GROUPS_OF_128 = {
    "awq": lambda: packed_awq(96, 256, group=128),
    "gptq4": lambda: packed_gptq(96, 256, 4, act_order=False, group=128),
    "gptq8-act-order": lambda: packed_gptq(96, 256, 8, act_order=True, group=128),
}


@pytest.mark.parametrize(
    ("tokens", "split_k"), [*SHAPES[1:], *(pytest.param(t, 1, marks=pytest.mark.slow) for t in (20, 70))]
)
@pytest.mark.parametrize(  # the fast layer runs awq (groups in row order) and act-order
    "kind", [pytest.param(k, marks=pytest.mark.slow) if k == "gptq4" else k for k in sorted(GROUPS_OF_128)]
)
def test_tiles_inside_one_group_read_its_scales_once(kind: str, tokens: int, split_k: int) -> None:
    """Groups of 128 rows in row order hold whole K tiles, so the kernel loads one row of zero points and
    scales per tile (ONE_GROUP) and folds them into the weights it dequantizes; act-order groups never
    do. 5, 20, 33 and 70 tokens take each of the four tile shapes."""
    packed, weight = GROUPS_OF_128[kind]()
    assert packed.one_group_per_tile(128) == (kind != "gptq8-act-order")
    x = draw(tokens, 256, seed=15)
    close(wo.weight_only_gemm(x, packed, split_k), x @ weight, torch.float32)
    torch.testing.assert_close(wo.dequantize(packed, torch.float32), weight, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tokens", [1, 5, *(pytest.param(t, marks=pytest.mark.slow) for t in (20, 33, 70))])
@pytest.mark.parametrize("kind", ["awq", "gptq4", "gptq8"])
def test_16_bit_activations_meet_the_weights_the_dense_route_dequantizes(kind: str, tokens: int) -> None:
    """With groups holding whole K steps the kernel folds each group's scale into the weights it
    dequantizes, rounded to the activations' dtype: the reference's float32 weights rounded to fp16, as
    `dequantize` writes them for the dense route, so the two routes multiply the same weights."""
    bits = 8 if kind == "gptq8" else 4
    packed, weight = packed_awq(96, 256, 128) if kind == "awq" else packed_gptq(96, 256, bits, False, 128)
    assert packed.one_group_per_tile(wo.tiles_for(tokens).block_k)
    rounded = weight.half().float()
    assert torch.equal(wo.dequantize(packed, torch.float16).float(), rounded)
    x = draw(tokens, 256, seed=17).half()
    torch.testing.assert_close(
        wo.weight_only_gemm(x, packed).float(), x.float() @ rounded, atol=2e-3, rtol=2e-3
    )


@pytest.mark.parametrize(
    "tiles",
    [
        wo.Tiles(16, 32, 256, 8),
        *(
            pytest.param(tiles, marks=pytest.mark.slow)
            for tiles in (wo.Tiles(16, 128, 64), wo.Tiles(32, 64, 32, 2))
        ),
    ],
)
@pytest.mark.parametrize("kind", ["int8", "awq", "gptq4", "gptq8-act-order"])
def test_every_launch_shape_the_tuning_bench_tries_is_exact(kind: str, tiles: wo.Tiles) -> None:
    """bench/quant_tune.py times other tile shapes than `tiles_for` picks: they compute the same."""
    packed, weight = GROUPS_OF_128.get(kind, lambda: FORMATS[kind](96, 256))()
    x = draw(5, 256, seed=16)
    close(wo.weight_only_gemm(x, packed, 2, tiles), x @ weight, torch.float32)


# the fast layer runs float16 (the half precision this test is about), the slow one float32 too
@pytest.mark.parametrize("dtype", [pytest.param(DTYPES[0], marks=pytest.mark.slow), *DTYPES[1:]])
@pytest.mark.parametrize("kind", ["int8", "awq", "gptq4-act-order"])
def test_weight_only_gemm_in_half_precision_and_odd_sizes(kind: str, dtype: torch.dtype) -> None:
    packed, weight = FORMATS[kind](88, 200)  # neither a multiple of the tiles
    x = draw(5, 200, seed=7).to(dtype)
    got = wo.weight_only_gemm(x, packed, split_k=3)
    assert got.dtype == dtype and got.shape == (5, 88)
    close(got, x.float() @ weight, dtype)


@pytest.mark.parametrize("kind", FORMAT_PARAMS)
def test_dequantize_kernel_equals_the_reference(kind: str) -> None:
    packed, weight = FORMATS[kind](96, 200)
    torch.testing.assert_close(wo.dequantize(packed, torch.float32), weight, rtol=1e-6, atol=1e-6)


def test_split_k_is_chosen_only_when_tiles_leave_sms_idle() -> None:
    assert choose_split_k(tiles=200, k=4096, block_k=128, sms=132) == 1
    assert choose_split_k(tiles=32, k=4096, block_k=128, sms=132) == 5
    assert choose_split_k(tiles=1, k=4096, block_k=128, sms=132) == 8  # >= 4 K blocks per split
    assert choose_split_k(tiles=1, k=256, block_k=128, sms=132) == 1


def fp8_blocks(out: int, inp: int, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_fp8_blocks(draw(out, inp, seed=8) * 0.05, block)


@NEEDS_FP8
def test_token_group_quantization_equals_the_reference() -> None:
    x = draw(5, 300, seed=9) * 3  # 300: a partial last group
    expected, expected_scales = reference_fp8.quantize_token_groups(x, 128)
    got, scales = fp8_quant.quantize_token_groups(x, 128)
    assert got.dtype == torch.float8_e4m3fn and scales.shape == (5, 3)
    torch.testing.assert_close(scales, expected_scales)
    same = got.float() == expected.float()
    if not ON_GPU:  # the interpreter rounds a value up to a power of two as half of it (e.g. 127 -> 64)
        same |= 2 * got.float() == expected.float()
    assert same.all()


@NEEDS_FP8
def test_token_group_quantization_stores_token_major_scales_on_request() -> None:
    """The scales cuBLAS's block-scaled GEMM reads: the same values, the tokens contiguous."""
    x = draw(5, 300, seed=9) * 3
    rows, scales = fp8_quant.quantize_token_groups(x, 128)
    rows_too, token_major = fp8_quant.quantize_token_groups(x, 128, tokens_major=True)
    assert token_major.shape == (5, 3) and token_major.stride() == (1, 5)
    assert torch.equal(rows_too.view(torch.uint8), rows.view(torch.uint8)) and torch.equal(
        token_major, scales
    )


@NEEDS_FP8
def test_token_group_quantization_pads_rows_with_zeros_on_request() -> None:
    """The padded rows cuBLAS's block-scaled GEMM takes: the tokens' rows as without padding, zeros past."""
    x = draw(5, 300, seed=9) * 3
    rows, scales = fp8_quant.quantize_token_groups(x, 128, tokens_major=True)
    padded_rows, padded_scales = fp8_quant.quantize_token_groups(x, 128, tokens_major=True, rows=8)
    assert (
        padded_rows.shape == (8, 300) and padded_scales.shape == (8, 3) and padded_scales.stride() == (1, 8)
    )
    assert torch.equal(padded_rows[:5].view(torch.uint8), rows.view(torch.uint8))
    assert torch.equal(padded_scales[:5], scales)
    assert not padded_rows[5:].view(torch.uint8).any() and (padded_scales[5:] > 0).all()


def block_layer(out: int, inp: int, block: tuple[int, int] = (128, 128)) -> QuantLinear:
    """An FP8 block linear loaded from float weights (quantized at load, as a checkpoint stores them)."""
    layer = QuantLinear(inp, [out], False, Fp8BlockMethod(block, checkpoint_is_fp8=False))
    layer.load("weight", draw(out, inp, seed=8) * 0.05, 0)
    return layer


def test_cublas_block_route_takes_only_whole_128_blocks_in_fours_from_its_table_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Layers whose weight cuBLAS's block-scaled GEMM can take get it as their dense route from
    `DENSE_FROM_TOKENS["fp8-block-cublas"]` tokens (bf16 rows), the warm-up's counts ending there; the
    device is asked only for such layers."""
    asked: list[torch.device] = []
    monkeypatch.setattr(triton_gemms, "has_cublas_blocks", lambda device: asked.append(device) or True)
    monkeypatch.setattr(fp8_gemm, "has_fp8_dot", lambda device: True)
    for odd in (block_layer(512, 1024, (64, 128)), block_layer(512, 640), block_layer(384, 1024)):
        assert not fp8_routes.cublas_takes_blocks(odd)  # other blocks; 5 blocks of inputs; 3 of outputs
        gemm = triton_gemms.gemm_for(odd, DEVICE)
        assert gemm is not None and gemm.table_key == "fp8-block" and gemm.dense is None
    assert asked == []
    layer = block_layer(512, 1024)
    gemm = triton_gemms.gemm_for(layer, DEVICE)
    assert gemm is not None and gemm.table_key == "fp8-block-cublas" and asked == [DEVICE]
    start = triton_gemms.DENSE_FROM_TOKENS["fp8-block-cublas"]
    assert start is not None and gemm.dense_from() == start and gemm.variant_tokens()[-1] == start
    assert not gemm.dense_runs(start - 1) and gemm.dense_runs(start)
    assert not fp8_routes.has_cublas_blocks(torch.device("cpu"))


def test_cublas_block_route_leaves_other_than_bf16_rows_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = block_layer(512, 1024)
    called: list[torch.dtype] = []
    monkeypatch.setattr(triton_gemms, "block_mm_rows", lambda layer, rows: called.append(rows.dtype))
    monkeypatch.setattr(triton_gemms, "fp8_block_kernel", lambda layer, rows, fp8_dot: called.append(fp8_dot))
    triton_gemms.fp8_block_cublas(layer, torch.empty(16, 1024, dtype=torch.float16))
    triton_gemms.fp8_block_cublas(layer, torch.empty(16, 1024, dtype=torch.bfloat16))
    assert called == [True, torch.bfloat16]


@pytest.mark.parametrize("tokens", [1, 7, 64, 130])
def test_cublas_block_gemm_equals_the_reference(tokens: int) -> None:
    """Where cuBLAS takes block scales (sm_90): token counts in fours and not (padded), against the
    reference on activations the quantization keeps exact; the routed layer takes it from its table
    entry."""
    if not (ON_GPU and fp8_routes.has_cublas_blocks(DEVICE)):
        pytest.skip("no block-scaled cuBLAS GEMM here (sm_90, PyTorch 2.9+, cuBLAS 12.9+)")
    layer = block_layer(512, 1024)
    x = exact_fp8_activations(tokens, 1024, 128, seed=11).to(torch.bfloat16)
    got = fp8_routes.block_mm_rows(layer, x)
    assert got.shape == (tokens, 512) and got.dtype == torch.bfloat16
    expected = reference_fp8.fp8_block_gemm(x.float(), layer.weight, layer.weight_scale_inv, (128, 128))
    close_after_fp8_dots(got.float(), expected)
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    if tokens >= triton_gemms.DENSE_FROM_TOKENS["fp8-block-cublas"]:
        assert torch.equal(layer(x), got)
    else:  # the GEMV, or the Triton kernel
        close_after_fp8_dots(layer(x).float(), expected)


@pytest.mark.parametrize(("tokens", "split_k"), SHAPES)
@pytest.mark.parametrize("fp8_dot", [True, False])
def test_fp8_block_gemm_equals_the_reference(tokens: int, split_k: int, fp8_dot: bool) -> None:
    skip_without_fp8_dot(fp8_dot)
    block = (64, 128)
    weight, scale_inv = fp8_blocks(96, 320, block)  # a partial last block along both dimensions
    x = draw(tokens, 320, seed=10)
    if fp8_dot:  # activations the kernel quantizes exactly, so only the GEMM is compared here
        x = exact_fp8_activations(tokens, 320, block[1], seed=10)
        expected = reference_fp8.fp8_block_gemm(x, weight, scale_inv, block)
    else:
        expected = x @ dequantize_fp8_blocks(weight, scale_inv, block).T
    got = fp8_gemm.fp8_block_gemm(x, weight, scale_inv, block, split_k, fp8_dot)
    (close_after_fp8_dots if fp8_dot else functools.partial(close, dtype=torch.float32))(got, expected)


@pytest.mark.parametrize("tokens", [5, 20])
def test_fp8_block_gemm_takes_one_scale_a_tile_of_128_blocks(tokens: int) -> None:
    """Qwen3's 128 x 128 blocks, whose scale each decode tile (64 outputs: two a block) and prefill tile
    (128) takes once; the blocks' scales differ up to threefold, so a tile reading its neighbour's is far
    off. 300 outputs end in a partial block and tile; the prefill tile's rows past the tokens wrap around
    in its loads."""
    skip_without_fp8_dot(True)
    block = (128, 128)
    growing = torch.arange(1, 4, device=DEVICE).repeat_interleave(128)[:300, None]
    weight, scale_inv = quantize_fp8_blocks(draw(300, 256, seed=8) * 0.05 * growing, block)
    x = exact_fp8_activations(tokens, 256, 128, seed=12)
    got = fp8_gemm.fp8_block_gemm(x, weight, scale_inv, block, fp8_dot=True)
    close_after_fp8_dots(got, reference_fp8.fp8_block_gemm(x, weight, scale_inv, block))


def _pointer(dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(0, dtype=dtype, device="meta")


@pytest.mark.slow
@pytest.mark.parametrize("capability", sorted(ARCHITECTURES.values()))
def test_kernels_compile_for_every_gpu_generation(capability: int) -> None:
    run_compiled("tests.test_quant_kernels:compile_every_kernel", capability)


def compile_every_kernel(capability: int) -> None:
    """Ampere has no fp8 dot: there the FP8 GEMM decodes the weight bytes, and activations stay bf16."""
    bf16, i32, f32 = _pointer(torch.bfloat16), _pointer(torch.int32), _pointer(torch.float32)
    sizes = {"M": 1, "N": 4096, "K": 4096, "k_per_split": 1024, "DOT": "tf32"}
    strides = dict.fromkeys(("stride_xm", "stride_wk", "stride_wn", "stride_sg", "stride_zg"), 4096)
    stored = {
        wf.WeightFormat.INT8: (_pointer(torch.int8), f32),
        wf.WeightFormat.FP8: (_pointer(torch.uint8), f32),
        wf.WeightFormat.GPTQ: (i32, _pointer(torch.float16)),
    }
    for weight_format, (weight, scales) in stored.items():
        # the pointers PackedWeight.pointers() passes: INT8/FP8 have no zero points or g_idx, and pass
        # their scales in those places (a kernel must not compile code that reads them)
        unused = scales if weight_format < wf.WeightFormat.GPTQ else i32
        common = {
            "w_ptr": weight,
            "scale_ptr": scales,
            "zero_ptr": unused,
            "g_idx_ptr": unused,
            "out_ptr": bf16,
        }
        for one_group in (False, True) if weight_format == wf.WeightFormat.GPTQ else (False,):
            for bits in (4, 8) if weight_format == wf.WeightFormat.GPTQ else (4,):
                constexprs = {
                    "FORMAT": int(weight_format),
                    "BITS": bits,
                    "ZERO_OFFSET": 0 if one_group and bits == 4 else 1,  # AWQ's as-is zeros, GPTQ v1's
                    "GROUP": 128,
                    "ONE_GROUP": one_group,
                }
                # each tile shape `tiles_for` picks, as a launch compiles it (aligned, so its loads are
                # pipelined in shared memory), for 16-bit and float32 activations
                for tokens, dtype in itertools.product((1, 17, 33, 65), (torch.bfloat16, torch.float32)):
                    tiles, x = wo.tiles_for(tokens), _pointer(dtype)
                    kernel = compiled_for(
                        wo._weight_only_gemm_kernel, capability,
                        {"num_stages": wo.pipeline_stages(tiles, dtype)}, True, x_ptr=x, **common,
                        **{**sizes, "DOT": "ieee" if dtype == torch.float32 else "tf32"}, **strides,
                        stride_os=0, stride_om=4096, **constexprs, BLOCK_M=tiles.block_m,
                        BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                    )  # fmt: skip
                    within = kernel.metadata.shared <= SHARED_MEMORY_LIMIT[capability]
                    assert within, (weight_format, bits, one_group, tiles, dtype, capability)
                compile_for(
                    wo._dequantize_kernel, capability, **common, **sizes, **strides, **constexprs, BLOCK_N=64,
                    BLOCK_K=64,
                )  # fmt: skip
    fp8 = _pointer(torch.float8_e4m3fn)
    variants = [
        (fp8_dot, tile, 128, True)
        for fp8_dot, tile in itertools.product(
            (False, True) if capability >= 89 else (False,), (fp8_gemm.DECODE_TILE, fp8_gemm.PREFILL_TILE)
        )
    ] + [(capability >= 89, fp8_gemm.PREFILL_TILE, 64, False)]  # blocks narrower than the tile, odd K
    for fp8_dot, tile, block_out, even_k in variants:
        compile_for(
            fp8_gemm._fp8_block_gemm_kernel, capability, {"num_stages": tile.stages}, True,
            x_ptr=fp8 if fp8_dot else bf16, x_scale_ptr=f32, w_ptr=fp8 if fp8_dot else _pointer(torch.uint8),
            w_scale_ptr=f32, out_ptr=bf16, **sizes, stride_xm=4096, stride_xsm=32, stride_wn=4096,
            stride_wsn=32, stride_os=0, stride_om=4096, BLOCK_OUT=block_out, FP8_DOT=fp8_dot, EVEN_K=even_k,
            MASK_ROWS=tile.mask_rows, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=128,
        )  # fmt: skip
    if capability >= 89:
        compile_for(
            fp8_quant._quantize_token_groups_kernel, capability, x_ptr=bf16, q_ptr=_pointer(torch.uint8),
            scale_ptr=f32, M=64, K=4096, stride_xm=4096, stride_qm=4096, stride_sm=32, stride_sg=1,
            GROUP=128, BLOCK=128, GROUPS=32,
        )  # fmt: skip


LAYERS = {
    "int8": Int8WeightOnlyMethod,
    "fp8-channel": Fp8ChannelMethod,
    "awq": lambda: AwqMethod(32, checkpoint_is_awq=False),
    "gptq4": lambda: GptqMethod(4, 32, checkpoint_is_gptq=False),
    "gptq8": lambda: GptqMethod(8, -1, checkpoint_is_gptq=False),
}


def quantized_linear(method: QuantMethod) -> QuantLinear:
    """A fused q|k|v-like linear with a bias, loaded shard by shard from float weights."""
    layer = QuantLinear(256, [64, 32, 32], True, method)
    for index, rows in enumerate(draw(128, 256, seed=11).mul(0.05).split([64, 32, 32])):
        layer.load("weight", rows, index)
        layer.load("bias", draw(rows.shape[0], seed=12 + index), index)
    return layer


@pytest.mark.parametrize("dense", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layers_on_the_triton_backend_equal_their_reference_apply(
    kind: str, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`use_triton_gemms` swaps each method's `apply` for its kernel; large batches take the dense route."""
    layer = quantized_linear(LAYERS[kind]())
    x = draw(2, 3, 256, seed=13)  # [..., in] rows as the model passes them
    if kind == "fp8-channel" and triton_gemms.scaled_mm_scales(DEVICE):  # activations quantized per token
        x = exact_fp8_activations(6, 256, 256, seed=13).unflatten(0, (2, 3))
    expected = layer(x)
    dense_from = dict.fromkeys(triton_gemms.DENSE_FROM_TOKENS, 4 if dense else None)
    monkeypatch.setattr(triton_gemms, "DENSE_FROM_TOKENS", dense_from)
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    assert layer.method.gemm is not None
    if kind == "fp8-channel" and triton_gemms.scaled_mm_scales(DEVICE):  # fp8 tensor-core products
        close_after_fp8_dots(layer(x), expected)
    else:
        close(layer(x), expected, torch.float32)


@pytest.mark.parametrize("fp8_dot", [True, False])
def test_fp8_checkpoint_layers_on_the_triton_backend(fp8_dot: bool) -> None:
    skip_without_fp8_dot(fp8_dot)
    """With fp8 dots (sm_89+) activations are quantized per token and group; without, only decoded."""
    layer = quantized_linear(Fp8BlockMethod((32, 32), checkpoint_is_fp8=False))
    layer.method.gemm = triton_gemms.fp8_block_gemm(fp8_dot, cublas=False)
    x = exact_fp8_activations(5, 256, 32, seed=14)  # the interpreter's fp8 rounding then cannot differ
    if fp8_dot:
        expected = (
            reference_fp8.fp8_block_gemm(x, layer.weight, layer.weight_scale_inv, (32, 32)) + layer.bias
        )
    else:
        expected = layer.method.apply(layer, x, layer.bias)
    close(layer(x), expected, torch.float32)


def test_unquantized_and_odd_block_layers_keep_their_reference() -> None:
    plain = QuantLinear(48, [48], False, UnquantizedMethod())
    odd_blocks = QuantLinear(48, [48], False, Fp8BlockMethod((48, 48), checkpoint_is_fp8=False))
    triton_gemms.use_triton_gemms(nn.Sequential(plain, odd_blocks))
    assert plain.method.gemm is None and odd_blocks.method.gemm is None


CHECKPOINTS = {
    "int8": lambda tiny, directory: (tiny("qwen3"), "int8"),
    "fp8-at-load": lambda tiny, directory: (tiny("qwen3"), "fp8"),
    "fp8-blocks": lambda tiny, directory: (save_fp8_checkpoint(tiny("qwen3"), directory, (32, 32)), None),
    "awq": lambda tiny, directory: (save_awq_checkpoint(tiny("qwen3"), directory, 32), None),
    "gptq-act-order": lambda tiny, directory: (
        save_gptq_checkpoint(tiny("qwen2"), directory, 4, 32, True),
        None,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
def test_quantized_engine_on_triton_kernels_generates_what_it_does_on_the_references(
    tiny_model_dir, tmp_path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token-exact in float32, the decode steps (two sequences) on the GEMVs. On GPUs with fp8 dots the
    FP8 kernels quantize activations as well, so there only the first token, before differences can
    accumulate into a flipped near-tie, is compared."""
    model, quantization = CHECKPOINTS[kind](tiny_model_dir, tmp_path / "model")
    for key in triton_gemms.GEMV_UP_TO_TOKENS:  # two-sequence decodes on the GEMV, whatever the tuning
        monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, key, 2)
    gemv_calls: list[int] = []
    for name in ("gemv", "fp8_block_gemv"):
        launch = getattr(quant_gemv, name)
        monkeypatch.setattr(
            quant_gemv, name, lambda x, *args, launch=launch: gemv_calls.append(len(x)) or launch(x, *args)
        )
    prompts = [[5, 6, 7], list(range(20, 60))]
    params = SamplingParams(temperature=0, max_tokens=6)
    tokens = {}
    for kernels in ("torch", "triton"):
        llm = LLM(str(model), device=DEVICE.type, dtype="float32", kernels=kernels,
                  quantization=quantization, num_kv_blocks=64)  # fmt: skip
        gate_up = llm.engine.runner.model.layers[0].mlp.gate_up_proj
        assert (gate_up.method.gemm is not None) == (kernels == "triton")
        outputs = llm.generate(prompts, params, use_tqdm=False)
        tokens[kernels] = [
            output.outputs[0].token_ids[: 1 if kind.startswith("fp8") and ON_GPU else None]
            for output in outputs
        ]
    assert tokens["triton"] == tokens["torch"]
    assert 2 in gemv_calls  # the decode steps of both sequences (1: the warm-up)
