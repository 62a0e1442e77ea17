"""The quantized decode GEMVs equal their PyTorch references (x times the dequantized weight) for every
format, odd sizes (N and K not multiples of any tile or block), group sizes 32/64/128 and act-order, one
and several token rows; they compile for every GPU generation; the quantized layers route small batches
to them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, run_compiled
from tests.test_quant_kernels import (
    DEVICE,
    ON_GPU,
    _pointer,
    close,
    draw,
    packed_awq,
    packed_fp8,
    packed_gptq,
    packed_int8,
)
from tokenmill.kernels import reference
from tokenmill.kernels.triton import fp8_gemv, gemv_fusion, int4_gemv, quant_gemv
from tokenmill.kernels.triton import weight_formats as wf
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION, Fusion
from tokenmill.quantization import QuantLinear, triton_gemms
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.fp8 import Fp8BlockMethod, dequantize_fp8_blocks, quantize_fp8_blocks
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

OUT, IN = 88, 384  # 88: not a multiple of any tile width; 384: three groups of 128, a partial K step
FORMATS = {
    "int8": lambda: packed_int8(OUT, IN),
    "fp8": lambda: packed_fp8(OUT, IN),
    **{f"awq-g{group}": lambda group=group: packed_awq(OUT, IN, group) for group in (32, 64, 128)},
    **{
        f"gptq4-g{group}": lambda group=group: packed_gptq(OUT, IN, 4, False, group)
        for group in (32, 64, 128)
    },
    "gptq8-g128": lambda: packed_gptq(OUT, IN, 8, False, 128),
    "gptq4-act-order": lambda: packed_gptq(OUT, IN, 4, True, 64),
    "gptq8-act-order": lambda: packed_gptq(OUT, IN, 8, True, 32),
    "awq-g96": lambda: packed_awq(OUT, IN, 96),  # a group of 96 rows: chunks of 32, groups read per row
}


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


# 0.1-0.5 s each interpreted: the fast layer keeps int8, fp8, awq-g128 and gptq8-act-order
SLOW_FORMATS = (
    "awq-g32",
    "awq-g64",
    "awq-g96",
    "gptq4-g32",
    "gptq4-g64",
    "gptq4-g128",
    "gptq4-act-order",
    "gptq8-g128",
)


@pytest.mark.parametrize("tokens", [1, pytest.param(3, marks=pytest.mark.slow)])  # 3: 0.8 s a format
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_FORMATS else k for k in sorted(FORMATS)]
)
def test_gemv_equals_the_dequantized_reference(kind: str, tokens: int) -> None:
    packed, weight = FORMATS[kind]()
    x = draw(tokens, IN, seed=21)
    close(quant_gemv.gemv(x, packed), x @ weight, torch.float32)


@pytest.mark.parametrize(
    ("kind", "block_n", "tile_bytes"),
    [
        ("int8", 64, 4096),
        ("fp8", 4, 32768),
        ("gptq4-g64", 128, 4096),
        pytest.param("awq-g32", 32, 32768, marks=pytest.mark.slow),
    ],
)
def test_gemv_shapes_the_tuning_bench_sweeps_compute_the_same(
    kind: str, block_n: int, tile_bytes: int
) -> None:
    """bench/quant_gemv_hbm.py --sweep times other shapes than `default_shape` picks."""
    packed, weight = FORMATS[kind]()
    x = draw(1, IN, seed=28)
    close(
        quant_gemv.gemv(x, packed, shape=quant_gemv.GemvShape(block_n, tile_bytes)), x @ weight, torch.float32
    )


@pytest.mark.slow  # 1.5 s a format interpreted
@pytest.mark.parametrize("kind", ["awq", "fp8"])
@pytest.mark.parametrize("programs_per_sm", [pytest.param(1, marks=pytest.mark.slow), 64])
def test_split_k_gemv_sums_and_leaves_the_arrival_counts_at_zero(
    kind: str, programs_per_sm: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 4-bit and the e4m3 GEMV with K split over programs per output tile (64 per SM wanted) or not
    at all: the reference's sums; a second launch gives the same bits, since the last split of each tile
    reset its count."""
    monkeypatch.setattr(gemv_fusion, "SPLIT_PROGRAMS_PER_SM", programs_per_sm)
    packed, weight = packed_awq(OUT, 512, 128) if kind == "awq" else packed_fp8(OUT, 2 * fp8_gemv.BLOCK_K)
    x = draw(3, weight.shape[0], seed=29)
    first = quant_gemv.gemv(x, packed)
    close(first, x @ weight, torch.float32)
    assert torch.equal(quant_gemv.gemv(x, packed), first)
    assert not gemv_fusion.split_scratch(x.device)["count_ptr"].any()


def _recorded_splits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The split counts the e4m3 GEMV launches with, from here on."""
    splits: list[int] = []

    def counted(*args: int) -> int:
        splits.append(gemv_fusion.split_count(*args))
        return splits[-1]

    monkeypatch.setattr(fp8_gemv, "split_count", counted)
    return splits


@pytest.mark.slow  # with the split test above
def test_fp8_gemv_splits_k_where_its_tiles_leave_sms_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the split test above relies on: 64 programs per SM wanted split the e4m3 GEMV's K (three
    rows, as there)."""
    monkeypatch.setattr(gemv_fusion, "SPLIT_PROGRAMS_PER_SM", 64)
    splits = _recorded_splits(monkeypatch)
    packed, weight = packed_fp8(OUT, 2 * fp8_gemv.BLOCK_K)
    quant_gemv.gemv(draw(3, weight.shape[0], seed=31), packed)
    assert splits == [2]


def _fused_fp8_gemv(rows: int, k: int, prologue: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The e4m3 GEMV of `rows` token rows with the RMSNorm or SiLU-and-mul `prologue` and the residual
    fused in, and the unfused ops' result on the same inputs."""
    packed, weight = packed_fp8(OUT, k)
    residual = draw(rows, OUT, seed=seed + 1)
    if prologue == "norm":
        x, norm = draw(rows, k, seed=seed), (torch.rand(k) + 0.5, 1e-6)
        got = quant_gemv.gemv(x, packed, Fusion(norm=norm, residual=residual))
        inputs = reference.rms_norm(x, *norm)[0]
    else:
        x = draw(rows, 2 * k, seed=seed)
        got = quant_gemv.gemv(x, packed, Fusion(silu_mul=True, residual=residual))
        inputs = reference.silu_and_mul(x)
    return got, inputs @ weight + residual


def _fused_fp8_block_gemv(
    rows: int, n: int, k: int, block: tuple[int, int], prologue: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`quant_gemv.fp8_block_gemv` of a block-quantized [n, k] weight with the RMSNorm or SiLU-and-mul
    `prologue` and the residual fused in, and the unfused ops' result times the dequantized weight."""
    weight, scale_inv = quantize_fp8_blocks(draw(n, k, seed=seed) * 0.05, block)
    residual = draw(rows, n, seed=seed + 1)
    if prologue == "norm":
        x, norm = draw(rows, k, seed=seed + 2), (torch.rand(k) + 0.5, 1e-6)
        fusion, inputs = Fusion(norm=norm, residual=residual), reference.rms_norm(x, *norm)[0]
    else:
        x = draw(rows, 2 * k, seed=seed + 2)
        fusion, inputs = Fusion(silu_mul=True, residual=residual), reference.silu_and_mul(x)
    got = quant_gemv.fp8_block_gemv(x, weight, scale_inv, block, fusion)
    return got, inputs @ dequantize_fp8_blocks(weight, scale_inv, block).T + residual


@pytest.mark.parametrize("block", [(128, 128), pytest.param((16, 64), marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    ("k", "programs_per_sm", "split"), [(2148, 2, 1), pytest.param(3072, 64, 2, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("prologue", ["norm", pytest.param("silu_mul", marks=pytest.mark.slow)])
def test_fp8_block_gemv_fused_equals_the_unfused_ops_on_the_dequantized_weight(
    block: tuple[int, int], k: int, programs_per_sm: int, split: int, prologue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Block scales on the word GEMV: one block row for every tile (128 x 128) or one per tile (16 x 64),
    a partial last block column (K 2148), split K (3072 over two splits), each prologue and the
    residual: the unfused ops times the dequantized weight."""
    monkeypatch.setattr(gemv_fusion, "SPLIT_PROGRAMS_PER_SM", programs_per_sm)
    splits = _recorded_splits(monkeypatch)
    got, expected = _fused_fp8_block_gemv(2, OUT, k, block, prologue, seed=43)
    assert splits == [split]
    close(got, expected, torch.float32)


def test_fp8_gemv_caps_its_registers_only_past_one_wave_of_one_token_programs() -> None:
    """Qwen3-8B on 132 SMs: gate|up's 1,536 programs at one token (2.3 waves of five an SM) take the
    cap; q|k|v's 384 (one wave) do not, nor do two rows' 3,072."""
    assert fp8_gemv.register_cap(1, 1536, 132) == {"maxnreg": fp8_gemv.CAPPED_REGISTERS}
    assert fp8_gemv.register_cap(1, 384, 132) == {}
    assert fp8_gemv.register_cap(2, 3072, 132) == {}


def test_fp8_gemv_past_one_wave_takes_tiles_twice_as_wide_and_half_as_deep() -> None:
    """Qwen3-8B on 132 SMs: gate|up at one token in WAVE_TILE (768 programs); q|k|v, two rows, and block
    rows of 16 outputs (no whole wave tile) keep 16 outputs by BLOCK_K."""
    warps = fp8_gemv.NUM_WARPS
    assert fp8_gemv.default_tile(1, 24576, None, 132) == (*fp8_gemv.WAVE_TILE, warps) == (32, 256, 4)
    assert fp8_gemv.default_tile(1, 24576, (128, 128), 132) == (*fp8_gemv.WAVE_TILE, warps)
    for rows, n, block in ((1, 6144, None), (2, 24576, None), (1, 24576, (16, 64))):
        assert fp8_gemv.default_tile(rows, n, block, 132) == (16, fp8_gemv.BLOCK_K, warps)


def test_fp8_block_gemv_where_16_wide_tiles_make_one_wave_takes_32_by_256_tiles_at_8_warps() -> None:
    """Qwen3-8B's o and down (4,096 outputs: 256 tiles of 16 on 132 SMs, which `gemv` would run deep):
    128 x 128 block scales take BLOCK_SCALED_ONE_WAVE_TILE; per-channel scales, two rows, block rows of
    16, and one wave of 8-wide tiles keep their tiles."""
    assert (
        fp8_gemv.default_tile(1, 4096, (128, 128), 132) == fp8_gemv.BLOCK_SCALED_ONE_WAVE_TILE == (32, 256, 8)
    )
    for rows, block in ((1, None), (2, (128, 128)), (1, (16, 64))):
        assert fp8_gemv.default_tile(rows, 4096, block, 132) == (16, fp8_gemv.BLOCK_K, fp8_gemv.NUM_WARPS)
    # 2,048 outputs: 8-wide tiles cover the SMs (256 of them), a shape not measured with the block tile
    assert fp8_gemv.default_tile(1, 2048, (128, 128), 132) == (8, fp8_gemv.BLOCK_K, fp8_gemv.NUM_WARPS)


@pytest.mark.parametrize("prologue", ["norm", pytest.param("silu_mul", marks=pytest.mark.slow)])  # 1 s each
def test_fp8_block_gemv_in_block_scaled_one_wave_tiles_equals_the_unfused_ops(
    prologue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One token, 256 outputs in 128 x 128 blocks on 12 SMs (16 tiles of 16 would make one wave): 32 x 256
    tiles at 8 warps, K (2,048) split four ways, with each prologue and the residual: the unfused ops
    times the dequantized weight."""
    monkeypatch.setattr(fp8_gemv, "num_sms", lambda device: 12)
    splits = _recorded_splits(monkeypatch)
    got, expected = _fused_fp8_block_gemv(1, 256, 2048, (128, 128), prologue, seed=46)
    assert splits == [4]
    close(got, expected, torch.float32)


@pytest.mark.parametrize("prologue", ["norm", pytest.param("silu_mul", marks=pytest.mark.slow)])
def test_fp8_gemv_with_one_wave_of_tiles_runs_unsplit_in_deeper_steps(
    prologue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six tiles of 16 outputs on four SMs (one to two tiles per SM): no split (`split_count` is not
    asked), K in steps of twice BLOCK_K over two full steps and a partial one, with the prologue and the
    residual: the unfused ops' results."""
    monkeypatch.setattr(fp8_gemv, "num_sms", lambda device: 4)
    splits = _recorded_splits(monkeypatch)
    got, expected = _fused_fp8_gemv(1, 5 * fp8_gemv.BLOCK_K - 4, prologue, seed=42)
    assert splits == []
    close(got, expected, torch.float32)


@pytest.mark.parametrize(
    ("k", "programs_per_sm", "split"), [pytest.param(2148, 2, 1, marks=pytest.mark.slow), (3072, 64, 2)]
)
@pytest.mark.parametrize("prologue", [pytest.param("norm", marks=pytest.mark.slow), "silu_mul"])  # ~1 s each
def test_fp8_gemv_over_several_k_steps_equals_the_unfused_ops(
    k: int, programs_per_sm: int, split: int, prologue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several K steps a program: 5 with a partial last one (K 2148, no split), or 3 in each of two
    splits (K 3072): the look-ahead and each split's bounds, with the prologue that reads the whole row
    (RMSNorm) or the up half K columns on (SiLU-and-mul), and the residual."""
    monkeypatch.setattr(gemv_fusion, "SPLIT_PROGRAMS_PER_SM", programs_per_sm)
    splits = _recorded_splits(monkeypatch)
    got, expected = _fused_fp8_gemv(2, k, prologue, seed=40)
    assert splits == [split]
    close(got, expected, torch.float32)


@pytest.mark.parametrize(
    "shape",
    [
        int4_gemv.Int4Shape(),  # the fast layer runs the default shape only
        pytest.param(int4_gemv.WIDE_SHAPE, marks=pytest.mark.slow),
        pytest.param(int4_gemv.Int4Shape(block_n=16, groups=4), marks=pytest.mark.slow),
        pytest.param(int4_gemv.Int4Shape(block_n=32, groups=2), marks=pytest.mark.slow),
    ],
)
# split K over two rows: ~1 s each interpreted (the fast layer splits K in the e4m3 tests above)
@pytest.mark.parametrize(("rows", "programs_per_sm"), [(1, 2), pytest.param(2, 64, marks=pytest.mark.slow)])
@pytest.mark.parametrize("prologue", ["norm", pytest.param("silu_mul", marks=pytest.mark.slow)])
def test_4_bit_gemv_launch_shapes_equal_the_unfused_ops(
    shape: int4_gemv.Int4Shape, rows: int, programs_per_sm: int, prologue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Every launch shape (chunks a K step, tile width), unsplit or with K split
    over programs (64 per SM wanted), with the prologue and the residual: the unfused ops times the
    dequantized weight, K 1024 in groups of 128 (two to eight steps a program)."""
    monkeypatch.setattr(gemv_fusion, "SPLIT_PROGRAMS_PER_SM", programs_per_sm)
    packed, weight = packed_awq(OUT, 1024, 128)
    residual = draw(rows, OUT, seed=52)
    if prologue == "norm":
        x, norm = draw(rows, 1024, seed=53), (torch.rand(1024) + 0.5, 1e-6)
        fusion, inputs = Fusion(norm=norm, residual=residual), reference.rms_norm(x, *norm)[0]
    else:
        x = draw(rows, 2048, seed=53)
        fusion, inputs = Fusion(silu_mul=True, residual=residual), reference.silu_and_mul(x)
    close(int4_gemv.gemv(x, packed, fusion, shape), inputs @ weight + residual, torch.float32)


def test_4_bit_gemv_takes_wide_steps_only_where_each_program_keeps_several() -> None:
    """Qwen3-8B on 132 SMs: gate|up (unsplit, 16 wide steps) and down (K split 8 ways, 6 each) in
    two-chunk steps; q|k|v (4 splits of 4) and o (8 of 2) one chunk a step; so is a K of one chunk."""
    for n, k in ((24576, 4096), (4096, 12288)):
        assert int4_gemv.launch_shape(n, k, 132) == int4_gemv.WIDE_SHAPE
    for n, k in ((6144, 4096), (4096, 4096), (24576, 128)):
        assert int4_gemv.launch_shape(n, k, 132) == int4_gemv.Int4Shape()


@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, marks=pytest.mark.slow), torch.bfloat16])
def test_4_bit_gemv_in_half_precision_stays_near_the_reference_and_the_fp32_sums(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU (sm_80+) half-precision activations take the bf16x2 inline PTX, whose products and word
    sums round to bf16: within 1% of the output range of the fp32 reference and of the portable path's
    fp32 sums on the same inputs (under the interpreter both are the portable path)."""
    packed, weight = packed_awq(OUT, 512, 128)
    x = draw(3, 512, seed=30).to(dtype)
    assert int4_gemv._uses_asm(x) == ON_GPU
    got = int4_gemv.gemv(x, packed, NO_FUSION).float()  # on sm_80+ quant_gemv takes `int4_mma` instead
    bound = 1e-2 * (x.float() @ weight).abs().max().item()
    torch.testing.assert_close(got, x.float() @ weight, atol=bound, rtol=0)
    monkeypatch.setattr(int4_gemv, "_uses_asm", lambda x: False)
    torch.testing.assert_close(got, int4_gemv.gemv(x, packed, NO_FUSION).float(), atol=bound, rtol=0)


def test_fp8_gemv_in_inline_ptx_gives_the_portable_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU of sm_89+ the words meet their activations in inline PTX: the portable decode's fp32
    values, multiplied and summed in another order (fused multiply-adds; under the interpreter both are
    the portable path)."""
    packed, _ = packed_fp8(OUT, IN)
    x = draw(2, IN, seed=32).to(torch.bfloat16)
    assert fp8_gemv._uses_asm(x.device) == (ON_GPU and wf.native_fp8(x.device))
    got = quant_gemv.gemv(x, packed).float()
    monkeypatch.setattr(fp8_gemv, "_uses_asm", lambda device: False)
    torch.testing.assert_close(got, quant_gemv.gemv(x, packed).float(), atol=0, rtol=1e-2)


def test_split_count_fills_the_sms_within_k_and_the_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gemv_fusion, "SPLIT_PROGRAMS_PER_SM", 2)
    assert gemv_fusion.split_count(tiles=96, k=4096, block_k=128, block_n=64, sms=132) == 4
    assert gemv_fusion.split_count(tiles=192, k=4096, block_k=128, block_n=64, sms=132) == 2
    assert gemv_fusion.split_count(tiles=384, k=4096, block_k=128, block_n=64, sms=132) == 1
    assert gemv_fusion.split_count(tiles=96, k=256, block_k=128, block_n=64, sms=132) == 2  # K steps
    assert gemv_fusion.split_count(tiles=64, k=3584, block_k=128, block_n=64, sms=132) == 4  # 28 steps
    assert gemv_fusion.split_count(tiles=2048, k=4096, block_k=128, block_n=64, sms=132) == 1


def test_chunks_hold_one_group_only_for_row_ordered_groups_of_16_rows_or_more() -> None:
    assert quant_gemv.packed_chunk(packed_awq(OUT, IN, 128)[0]) == (128, True)
    assert quant_gemv.packed_chunk(packed_gptq(OUT, IN, 4, False, 32)[0]) == (32, True)
    assert quant_gemv.packed_chunk(packed_awq(OUT, IN, 96)[0]) == (32, True)  # 96 = 3 x 32
    assert quant_gemv.packed_chunk(packed_awq(96, 320, 40)[0]) == (quant_gemv.ACT_ORDER_CHUNK, False)
    assert quant_gemv.packed_chunk(packed_gptq(OUT, IN, 4, True, 64)[0]) == (
        quant_gemv.ACT_ORDER_CHUNK,
        False,
    )


def test_fp8_bytes_decode_the_same_without_fp8_conversions(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPUs before sm_89 decode the e4m3 bit fields (scaled by 2^-8, undone on the sums), in the words of
    `fp8_gemv` (per-channel scales) as in the bytes of `quant_gemv`'s kernel (block scales, below)."""
    monkeypatch.setattr(wf, "native_fp8", lambda device: False)
    packed, weight = packed_fp8(OUT, IN)
    x = draw(2, IN, seed=22)
    close(quant_gemv.gemv(x, packed), x @ weight, torch.float32)


@pytest.mark.parametrize("native", [True, pytest.param(False, marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "block",
    [
        (128, 128),
        pytest.param((64, 32), marks=pytest.mark.slow),
        pytest.param((16, 64), marks=pytest.mark.slow),
    ],
)
def test_fp8_block_gemv_equals_the_dequantized_reference(
    block: tuple[int, int], native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partial blocks along both dimensions (100 x 300); activations are not quantized on this path."""
    monkeypatch.setattr(wf, "native_fp8", lambda device: native)
    weight, scale_inv = quantize_fp8_blocks(draw(100, 300, seed=23) * 0.05, block)
    x = draw(3, 300, seed=24)
    expected = x @ dequantize_fp8_blocks(weight, scale_inv, block).T
    close(quant_gemv.fp8_block_gemv(x, weight, scale_inv, block), expected, torch.float32)


@pytest.mark.parametrize(
    "kind", ["int8", *(pytest.param(k, marks=pytest.mark.slow) for k in ("awq-g128", "gptq4-act-order"))]
)
def test_gemv_in_half_precision_and_for_each_row_alone(kind: str) -> None:
    """fp16 activations and output; each row's result is the one it gets alone (no cross-row terms)."""
    packed, weight = FORMATS[kind]()
    x = draw(3, IN, seed=25).half()
    got = quant_gemv.gemv(x, packed)
    assert got.dtype == torch.float16 and got.shape == (3, OUT)
    close(got, x.float() @ weight, torch.float16)
    assert torch.equal(got[1:2], quant_gemv.gemv(x[1:2], packed))


LAYERS = {
    "int8": Int8WeightOnlyMethod,
    "fp8-block": lambda: Fp8BlockMethod((32, 32), checkpoint_is_fp8=False),
    "awq": lambda: AwqMethod(32, checkpoint_is_awq=False),
    "gptq4": lambda: GptqMethod(4, 64, checkpoint_is_gptq=False),
}


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.slow) if k in ("awq", "fp8-block") else k for k in sorted(LAYERS)],
)
def test_layers_route_batches_up_to_the_table_entry_to_the_gemv(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = QuantLinear(128, [64, 32], False, LAYERS[kind]())
    for index, rows in enumerate(draw(96, 128, seed=26).mul(0.05).split([64, 32])):
        layer.load("weight", rows, index)
    x = draw(4, 128, seed=27)
    expected = layer(x)
    triton_gemms.use_triton_gemms(nn.Sequential(layer))
    gemm = layer.method.gemm
    routes: list[str] = []
    for name in ("gemv", "kernel"):
        route = getattr(gemm, name)
        spy = lambda *args, route=route, name=name: routes.append(name) or route(*args)  # noqa: E731
        object.__setattr__(gemm, name, spy)
    monkeypatch.setitem(triton_gemms.GEMV_UP_TO_TOKENS, gemm.table_key, 2)
    close(layer(x[:2]), expected[:2], torch.float32)
    # fp8 blocks on sm_89+: the kernel quantizes the activations to fp8, the GEMV does not
    close(layer(x[:3]), expected[:3], torch.bfloat16 if kind == "fp8-block" and ON_GPU else torch.float32)
    assert routes == ["gemv", "kernel"]
    assert gemm.variant_tokens()[:2] == (1, 3)


@pytest.mark.slow
@pytest.mark.parametrize("capability", sorted(ARCHITECTURES.values()))
def test_gemvs_compile_for_every_gpu_generation(capability: int) -> None:
    run_compiled("tests.test_quant_gemv:compile_every_gemv", capability)


# (PROLOGUE, HAS_BIAS, HAS_RESIDUAL) of the fused small-batch path's projections: none, q|k|v and
# gate|up (RMSNorm, with and without bias), o (residual) and down (SiLU-and-mul, residual)
FUSIONS = ((0, False, False), (1, True, False), (1, False, False), (0, False, True), (2, False, True))
# each prologue once more with the gather of act-order layers (`Fusion.input_order`), which changes
# only the prologue's loads
GATHERED = tuple((fusion, True) for fusion in (FUSIONS[0], FUSIONS[2], FUSIONS[4]))


def _fusion_args(pointer: torch.Tensor, prologue: int, bias: bool, residual: bool) -> dict[str, object]:
    return dict(
        norm_weight_ptr=pointer, bias_ptr=pointer, residual_ptr=pointer, stride_r=4096, eps=1e-6,
        PROLOGUE=prologue, HAS_BIAS=bias, HAS_RESIDUAL=residual, NORM_BLOCK=1024,
    )  # fmt: skip


def compile_every_gemv(capability: int) -> None:
    """Every constexpr combination the launchers pick, for Qwen3-8B's widest and narrowest projections,
    and each fusion of the small-batch path."""
    bf16, i32, f32 = _pointer(torch.bfloat16), _pointer(torch.int32), _pointer(torch.float32)
    sizes = {"rows": 1, "N": 4096, "K": 12288, "stride_x": 12288, "stride_o": 4096}
    for is_int8, block in ((True, None), (False, None), (False, (128, 128))):
        for native in (True, False) if not is_int8 and capability >= 89 else (False,):
            for fusion in FUSIONS:
                compile_for(
                    quant_gemv._byte_gemv_kernel, capability, x_ptr=bf16,
                    w_ptr=_pointer(torch.int8 if is_int8 else torch.uint8), scale_ptr=f32, out_ptr=bf16,
                    **sizes, **_fusion_args(bf16, *fusion), stride_w=12288, stride_s=96 if block else 0,
                    FORMAT=int(wf.INT8 if is_int8 else wf.FP8), NATIVE_FP8=native,
                    BLOCK_OUT=block[0] if block else 0, BLOCK_N=32, BLOCK_K=1024,
                    CHUNK=block[1] if block else 512, num_warps=8,
                )  # fmt: skip
    for bits, one_group, block_n, zero_offset in ((4, True, 16, 0), (8, True, 32, 1), (4, False, 16, 1)):
        chunk = 128 if one_group else quant_gemv.ACT_ORDER_CHUNK
        plain = [(fusion, False) for fusion in (FUSIONS if one_group else FUSIONS[:1])]
        for fusion, gather in plain + list(GATHERED if one_group else ()):
            compile_for(
                quant_gemv._packed_gemv_kernel, capability, x_ptr=bf16, w_ptr=i32,
                scale_ptr=_pointer(torch.float16), zero_ptr=i32, g_idx_ptr=i32, out_ptr=bf16, **sizes,
                **_fusion_args(bf16, *fusion), order_ptr=i32, GATHER=gather, stride_wk=4096, stride_sg=4096,
                stride_zg=512,
                BITS=bits, ZERO_OFFSET=zero_offset, GROUP=128, ONE_GROUP=one_group, BLOCK_N=block_n,
                BLOCK_K=4 * chunk, CHUNK=chunk,
            )  # fmt: skip
    native = capability >= 89
    capped = fp8_gemv.register_cap(1, fp8_gemv.RESIDENT_PROGRAMS_PER_SM + 1, 1)
    for split, block_n, block, options in (
        (8, 16, None, None), (1, 16, None, capped), (2, 8, None, None), (1, 16, (128, 128), capped),
        (1, fp8_gemv.WAVE_TILE[0], None, capped), (1, fp8_gemv.WAVE_TILE[0], (128, 128), capped),
        (4, fp8_gemv.WAVE_TILE[0], (128, 128), {"num_warps": fp8_gemv.BLOCK_SCALED_ONE_WAVE_TILE[2]}),
    ):  # fmt: skip
        for fusion in FUSIONS:
            compile_for(
                fp8_gemv._fp8_gemv_kernel, capability, options, x_ptr=bf16, w_ptr=i32, scale_ptr=f32, out_ptr=bf16,
                partial_ptr=f32, count_ptr=i32, **sizes, k_per_split=1536, **_fusion_args(bf16, *fusion),
                stride_w=3072, stride_s=96 if block else 0, SPLIT=split, BLOCK_N=block_n,
                BLOCK_K=fp8_gemv.WAVE_TILE[1] if block_n == fp8_gemv.WAVE_TILE[0] else fp8_gemv.BLOCK_K, USE_ASM=native, NATIVE_FP8=native, BLOCK_OUT=block[0] if block else 0,
                BLOCK_IN=block[1] if block else 0, num_warps=fp8_gemv.NUM_WARPS,
            )  # fmt: skip
    for use_asm, split, groups in ((True, 8, 1), (True, 1, int4_gemv.WIDE_SHAPE.groups), (False, 2, 1)):
        for fusion, gather in [(fusion, False) for fusion in FUSIONS] + list(GATHERED):
            compile_for(
                int4_gemv._int4_gemv_kernel, capability, x_ptr=bf16, w_ptr=i32,
                scale_ptr=_pointer(torch.float16), zero_ptr=i32, out_ptr=bf16, partial_ptr=f32, count_ptr=i32,
                order_ptr=i32, GATHER=gather, **sizes, k_per_split=1536, **_fusion_args(bf16, *fusion),
                stride_wk=4096, stride_sg=4096,
                stride_zg=512, ZERO_OFFSET=0, GROUP=128, SPLIT=split, BLOCK_N=int4_gemv.BLOCK_N,
                BLOCK_K=int4_gemv.BLOCK_K, GROUPS=groups, USE_ASM=use_asm,
            )  # fmt: skip
