"""The Triton GEMM of each quantized format, standing in for its method's PyTorch `apply` when the model
runs on the Triton kernel backend: `use_triton_gemms` sets them once at load. This module imports Triton,
so only that backend imports it.

Each format has up to three routes, chosen per call by the number of tokens: a GEMV on the CUDA cores
(`kernels/triton/quant_gemv.py`) up to `GEMV_UP_TO_TOKENS`, which streams the stored bytes at memory
bandwidth for decode; its Triton GEMM kernel, which reads the stored bytes and dequantizes in registers
(batches of a few dozen tokens); and from `DENSE_FROM_TOKENS` a dense route for batches large enough to
be compute-bound: the weight dequantized once and multiplied by cuBLAS, or for
fp8 per channel torch._scaled_mm (fp8 tensor cores, activations quantized per token: `fp8_routes.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tokenmill.kernels.fp8_rows import Fp8Rows, ScaledRows
from tokenmill.kernels.triton import fp8_gemm, int4_mma, quant_gemv
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.kernels.triton.weight_formats import PackedWeight, WeightFormat, compiles_ptx
from tokenmill.kernels.triton.weight_only_gemm import TILE_ROWS, dequantize, weight_only_gemm
from tokenmill.quantization.base import QuantLinear
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod
from tokenmill.quantization.fp8_routes import (
    block_mm_rows,
    cublas_takes_blocks,
    has_cublas_blocks,
    resolved_mm_rows,
    scaled_mm_rows,
    scaled_mm_scales,
    unscaled_mm_rows,
)
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod

# Tokens per call from which each format leaves its Triton kernel for its dense route (None: never).
# `bench/quant_gemm.py --crossover` prints the first count from which each format's dense route wins
# (Qwen3-8B and Qwen3-4B layers, H200 and H100):
# - the 4-bit and 8-bit GPTQ/AWQ kernels win up to 128 tokens, the dense route from 192 (H100, both
#   presets; H200, Qwen3-8B: AWQ at 128 tokens 245 against 268 us, at 192 385 against 297;
#   bench/results/s29-w4-gemm/, 2026-11-25);
# - int8: the dense route from 192 (H200) or 384 (H100) tokens, 256 in between (same results);
# - fp8 per channel: torch._scaled_mm wins at every count measured (from 16), so it starts past the GEMV;
# - 128 x 128 FP8 blocks where cuBLAS takes block scales ("fp8-block-cublas", `fp8_routes.block_mm_rows`):
#   the Triton kernel up to 64 tokens (Qwen3-8B layer at 64: 103 against 113 us, H200), cuBLAS from 96
#   (113 against 130; bench/results/s28-crossover/). Other FP8 blocks ("fp8-block") keep the kernel at
#   every size where the GPU has fp8 dots; without them the kernel decodes the weight bytes and the dense
#   route starts at 256 (set on an H100 on 2026-11-22, not re-measured: no GPU here lacks fp8 dots).
DENSE_FROM_TOKENS: dict[str, int | None] = {
    "int8": 256,
    "fp8-channel": TILE_ROWS[0] + 1,
    "fp8-block": 256,
    "fp8-block-cublas": 96,
    "gptq4": 129,  # and AWQ, repacked into GPTQ's layout at load
    "gptq4-mma": 129,
    "gptq8": 129,
    # act-order GPTQ left out of row order (groups of unequal sizes; GPTQ's own act-order is reordered at
    # load, `GptqMethod.after_loading`, and takes the keys above): every kernel reads a group per input
    # row, the dense route wins at every count (Qwen3-8B layer, H100, 4-bit: 491 us at 1 token against
    # the GEMV's 908, 486 at 16 against the kernel's 1,284; bench/results/s29-w4-gemm/H)
    "gptq-act-order": 1,
}

# Tokens per call up to which each format runs its GEMV (one program per output tile and token row, the
# rows of a tile meeting in L2: a second row re-reads the weight from L2 and decodes it again; except
# `int4_mma`, whose tensor-core rows share one decode). Measured
# on an H100 (`bench/quant_gemm.py --presets qwen3-8b --gemv`, docs/benchmarks.md): the largest batch at
# which the GEMV beat the Triton kernel on Qwen3-8B's projections. fp8 blocks: `fp8_gemv` with block
# scales at one token (Qwen3-8B single stream, tok/s: H200 252.0 -> 329.8, H100 219.1 -> 273.0;
# docs/benchmarks.md, 2026-11-24 sixteenth session); from two, the tensor-core kernel, whose cost
# barely grows with the rows.
GEMV_UP_TO_TOKENS: dict[str, int] = {
    "int8": 1,
    "fp8-channel": 2,
    "fp8-block": 1,
    "fp8-block-cublas": 1,
    # 4-bit where `int4_mma` does not serve, AWQ too (`int4_gemv` at 3 and 4 rows: 1.23x and 0.98x of
    # bf16's GEMV, the kernel 1.10x; H100, bench/results/s29-w4-gemm/J)
    "gptq4": 3,
    "gptq4-mma": int4_mma.MAX_ROWS,  # `int4_mma` (sm_80+): 16 rows cost about what one does
    # 8-bit: at 2 rows the kernel runs 1.18x bf16's GEMV, the GEMV 0.80x; at one, 1.07x against 0.99x,
    # and the GEMV keeps the fused path's launches (H100, bench/results/s29-w4-gemm/I)
    "gptq8": 1,
    "gptq-act-order": 0,  # the dense route at every count (`DENSE_FROM_TOKENS`)
}

# Token counts that launch each variant of a format's GEMV (default: one variant, the 1-token count's).
GEMV_VARIANT_TOKENS: dict[str, tuple[int, ...]] = {
    "gptq4-mma": (1, int4_mma.MIN_ROWS, int4_mma.BLOCK_ROWS + 1),  # `int4_gemv`, one mma block, two
}

# (layer, rows [tokens, in]) -> [tokens, out]; rows as `Fp8Rows` for a dense route that takes them
Route = Callable[[QuantLinear, torch.Tensor | Fp8Rows], torch.Tensor]
# (layer, rows, what it fuses) -> [tokens, out]; rows are [tokens, 2 in] under `Fusion.silu_mul`
GemvRoute = Callable[[QuantLinear, torch.Tensor, Fusion], torch.Tensor]


@dataclass(frozen=True)
class RoutedGemm:
    """A format's GEMV, Triton kernel and dense route (None: the kernel at every size), which
    `GEMV_UP_TO_TOKENS` and `DENSE_FROM_TOKENS` (under `table_key`) choose between per call."""

    table_key: str
    kernel: Route
    dense: Route | None
    gemv: GemvRoute
    dense_takes_fp8_rows: bool = False  # the dense route multiplies fp8 activations, and takes `Fp8Rows`
    # the dense route's variant that leaves the output's scales to the kernel reading it (`ScaledRows`)
    scaled_dense: Callable[[QuantLinear, torch.Tensor | Fp8Rows], ScaledRows] | None = None

    def dense_from(self) -> int | None:
        """The token count from which the dense route runs (read per call, so a bench can move it)."""
        return None if self.dense is None else DENSE_FROM_TOKENS[self.table_key]

    def gemv_up_to(self) -> int:
        """The most tokens the GEMV runs (read per call, like `dense_from`)."""
        return GEMV_UP_TO_TOKENS[self.table_key]

    def dense_runs(self, tokens: int) -> bool:
        """Whether `tokens` rows take the dense route."""
        start = self.dense_from()
        return self.dense is not None and start is not None and tokens >= start and tokens > self.gemv_up_to()

    def takes_fp8_rows(self, tokens: int) -> bool:
        """Whether `tokens` rows take a dense route that reads `Fp8Rows`."""
        return self.dense_takes_fp8_rows and self.dense_runs(tokens)

    def __call__(self, layer: QuantLinear, x: torch.Tensor | Fp8Rows) -> torch.Tensor:
        if isinstance(x, Fp8Rows):  # quantized by the kernel that wrote them (`takes_fp8_rows`)
            assert self.dense is not None and self.takes_fp8_rows(x.shape[0])
            return self.dense(layer, x)
        rows = _rows(x)
        if len(rows) <= self.gemv_up_to():  # an empty batch too: the GEMV returns at once
            y = self.gemv(layer, rows, Fusion(input_order=layer.input_order))
        elif self.dense is not None and self.dense_runs(len(rows)):
            y = self.dense(layer, layer.stored_order(rows))
        else:
            y = self.kernel(layer, layer.stored_order(rows))
        return y.view(*x.shape[:-1], layer.out_features)

    def scaled(self, layer: QuantLinear, x: torch.Tensor | Fp8Rows) -> torch.Tensor | ScaledRows:
        """`self(layer, x)`; on a dense route with a `scaled_dense` variant, that variant's `ScaledRows`."""
        if self.scaled_dense is None or not self.dense_runs(x.shape[0]):
            return self(layer, x)
        return self.scaled_dense(layer, x if isinstance(x, Fp8Rows) else _rows(x))

    def fused_gemv(
        self,
        layer: QuantLinear,
        x: torch.Tensor,
        norm: tuple[torch.Tensor, float] | None = None,
        silu_mul: bool = False,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The GEMV of f(x) (+ the layer's bias) (+ residual), f the RMSNorm `norm` or SiLU-and-mul of a
        gate|up x [tokens, 2 in] (see `Fusion`), in one launch (two where `int4_mma` runs: f first, three
        with a gather of f's output); for the fused small-batch path, up to `gemv_up_to()` tokens. A layer
        stored in another input order (`QuantLinear.input_order`) has the GEMV read x through it."""
        return self.gemv(layer, x, Fusion(norm, silu_mul, layer.bias, residual, layer.input_order))

    def variant_tokens(self) -> tuple[int, ...]:
        """Token counts that between them launch every kernel variant a batch can select: the GEMV's
        (`GEMV_VARIANT_TOKENS`; one count for most: their launch shape does not depend on the tokens),
        the first count of each kernel tile shape between the GEMV and the dense route, and the dense
        route's first."""
        start, kernel_from = self.dense_from(), self.gemv_up_to() + 1
        kernel = []
        for first, last in zip((1, *(rows + 1 for rows in TILE_ROWS)), (*TILE_ROWS, None), strict=True):
            tokens = max(first, kernel_from)
            if (last is None or tokens <= last) and (start is None or tokens < start):
                kernel.append(tokens)
        gemv = GEMV_VARIANT_TOKENS.get(self.table_key, (1,)) if kernel_from > 1 else ()
        return (*gemv, *kernel) if start is None else (*gemv, *kernel, start)


def packed_weight(layer: QuantLinear) -> PackedWeight:
    """The layer's stored tensors as the weight-only kernel reads them, worked out on the first call
    (before any CUDA graph is captured: GPTQ's group order is read from the device) and kept."""
    packed = layer.__dict__.get("packed_weight")
    if packed is None:
        packed = layer.packed_weight = _pack(layer)
    return packed


def _pack(layer: QuantLinear) -> PackedWeight:
    method, sizes = layer.method, (layer.in_features, layer.out_features)
    if isinstance(method, Int8WeightOnlyMethod):
        return PackedWeight(WeightFormat.INT8, layer.weight, layer.weight_scale, *sizes)
    if isinstance(method, Fp8ChannelMethod):
        return PackedWeight(WeightFormat.FP8, layer.weight, layer.weight_scale, *sizes)
    assert isinstance(method, GptqMethod)  # AwqMethod too: its tensors are in GPTQ's layout
    rows = torch.arange(layer.in_features, device=layer.g_idx.device)
    in_row_order = torch.equal(layer.g_idx, (rows // layer.group_size).to(layer.g_idx.dtype))  # no act-order
    return PackedWeight(
        WeightFormat.GPTQ, layer.qweight, layer.scales, *sizes, layer.qzeros, layer.g_idx, method.bits,
        layer.group_size, in_row_order, method.zero_offset,
    )  # fmt: skip


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[..., in] -> [tokens, in] with unit column stride, as the kernels index it."""
    x = x.reshape(-1, x.shape[-1])
    return x if x.stride(1) == 1 else x.contiguous()


def weight_only_kernel(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
    return weight_only_gemm(rows, packed_weight(layer))


def packed_gemv(layer: QuantLinear, rows: torch.Tensor, fusion: Fusion) -> torch.Tensor:
    return quant_gemv.gemv(rows, packed_weight(layer), fusion)


def fp8_block_gemv(layer: QuantLinear, rows: torch.Tensor, fusion: Fusion) -> torch.Tensor:
    method = layer.method
    assert isinstance(method, Fp8BlockMethod)
    return quant_gemv.fp8_block_gemv(rows, layer.weight, layer.weight_scale_inv, method.block, fusion)


def dequantized_dense(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
    """The whole weight dequantized once by a Triton kernel, then a cuBLAS GEMM."""
    return rows @ dequantize(packed_weight(layer), rows.dtype)


def fp8_block_kernel(layer: QuantLinear, rows: torch.Tensor, fp8_dot: bool) -> torch.Tensor:
    method = layer.method
    assert isinstance(method, Fp8BlockMethod)
    return fp8_gemm.fp8_block_gemm(rows, layer.weight, layer.weight_scale_inv, method.block, fp8_dot=fp8_dot)


def fp8_block_dense(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
    """The reference: the weight dequantized by PyTorch, then a dense GEMM."""
    return layer.method.apply(layer, rows, None)


def fp8_block_cublas(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
    """cuBLAS's block-scaled GEMM for bf16 rows (the output dtype it was tried with), the kernel else."""
    if rows.dtype != torch.bfloat16:
        return fp8_block_kernel(layer, rows, fp8_dot=True)
    return block_mm_rows(layer, rows)


def fp8_block_gemm(fp8_dot: bool, cublas: bool = False) -> RoutedGemm:
    """fp8 tensor-core dots (sm_89+) at every size, or from `DENSE_FROM_TOKENS["fp8-block-cublas"]` tokens
    cuBLAS's block-scaled GEMM where `cublas` (the layer takes it: `fp8_routes.cublas_takes_blocks`);
    without fp8 dots the weight bytes decoded in registers, and from `DENSE_FROM_TOKENS["fp8-block"]`
    tokens the dequantized weight through cuBLAS."""
    kernel = functools.partial(fp8_block_kernel, fp8_dot=fp8_dot)
    if fp8_dot and cublas:
        return RoutedGemm("fp8-block-cublas", kernel, fp8_block_cublas, fp8_block_gemv)
    return RoutedGemm("fp8-block", kernel, None if fp8_dot else fp8_block_dense, fp8_block_gemv)


def gemm_for(layer: QuantLinear, device: torch.device) -> RoutedGemm | None:
    """The routed GEMM of `layer`'s method on `device`; None: unquantized (cuBLAS already), or a layout
    the kernels do not take (the reference `apply` runs)."""
    method = layer.method
    if isinstance(method, Int8WeightOnlyMethod):
        return RoutedGemm("int8", weight_only_kernel, dequantized_dense, packed_gemv)
    if isinstance(method, GptqMethod):  # AWQ included
        if method.act_order:
            key = "gptq-act-order"
        else:
            key = "gptq4-mma" if _mma_serves(layer, method, device) else f"gptq{method.bits}"
        return RoutedGemm(key, weight_only_kernel, dequantized_dense, packed_gemv)
    if isinstance(method, Fp8ChannelMethod):
        scales = scaled_mm_scales(device)
        if scales is None:  # no fp8 GEMM here: its bytes are decoded as int8's are
            return RoutedGemm("int8", weight_only_kernel, dequantized_dense, packed_gemv)
        dense = scaled_mm_rows if scales == "row" else resolved_mm_rows
        return RoutedGemm(
            "fp8-channel", weight_only_kernel, dense, packed_gemv, dense_takes_fp8_rows=True,
            scaled_dense=unscaled_mm_rows,
        )  # fmt: skip
    if isinstance(method, Fp8BlockMethod) and _kernel_reads_blocks(method.block):
        fp8_dot = fp8_gemm.has_fp8_dot(device)
        return fp8_block_gemm(fp8_dot, fp8_dot and cublas_takes_blocks(layer) and has_cublas_blocks(device))
    return None


def _mma_serves(layer: QuantLinear, method: GptqMethod, device: torch.device) -> bool:
    """Whether `int4_mma` runs `layer` on `device` (for 16-bit activations; layers left in act-order
    never get here): 4 bits, inputs and groups (-1: one group of all inputs) in whole K steps, outputs in
    whole programs, a GPU that runs its inline PTX. Where it does not, the GEMV stops at 3 rows, as
    `int4_gemv`'s does."""
    group = layer.in_features if method.group_size == -1 else method.group_size
    return (
        method.bits == 4
        and int4_mma.takes_shape(layer.in_features, layer.out_features, group)
        and compiles_ptx(device)
    )


def _kernel_reads_blocks(block: tuple[int, int]) -> bool:
    """The FP8 kernel steps through K one weight block at a time: a power of two of at least 16."""
    return block[1] >= 16 and block[1] & (block[1] - 1) == 0


def use_triton_gemms(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, QuantLinear):
            device = next(module.parameters()).device
            module.method.gemm = gemm_for(module, device)
