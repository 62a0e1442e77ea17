"""Tile sweep of the fused small-batch GEMVs (`kernels/triton/skinny_gemm.py`): each variant (rows per
program, weight rows, K step, warps, pipeline stages) timed as in a decode step, many launches inside one
CUDA graph, with the weights rotated through more than the L2 so every launch reads HBM. Prints the best
variants per projection and batch width next to the shipped choice (`tile_shape`), and writes them all.

Usage: PYTHONPATH=. python bench/gemv_sweep.py [--shapes 0.6b-qkv,...] [--rows 1,5] [--out sweep.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
import triton

from tokenmill.kernels.triton import skinny_gemm
from tokenmill.kernels.triton.lora_fold import fold_args
from tokenmill.kernels.triton.split_k import num_sms

# name: (prologue: 0 plain, 1 RMSNorm, 2 SiLU-and-mul; N; K)
SHAPES = {
    "0.6b-qkv": (1, 4096, 1024),
    "0.6b-o": (0, 1024, 2048),
    "0.6b-gateup": (1, 6144, 1024),
    "0.6b-down": (2, 1024, 3072),
    "0.6b-head": (0, 151936, 1024),
    "8b-qkv": (1, 6144, 4096),
    "8b-o": (0, 4096, 4096),
    "8b-gateup": (1, 24576, 4096),
    "8b-down": (2, 4096, 12288),
}
KERNELS = {
    0: skinny_gemm._gemv_kernel,
    1: skinny_gemm._rms_norm_gemv_kernel,
    2: skinny_gemm._silu_mul_gemv_kernel,
}
ROTATED_BYTES = 160e6  # more than an H100's or H200's L2


def launcher(prologue: int, x, weights, outs, norm, rows, n, k, variant) -> Callable[[int], None]:
    block_m, block_n, block_k, warps, stages = variant
    grid = (triton.cdiv(n, block_n) * triton.cdiv(rows, block_m),)
    options = {} if stages is None else {"num_stages": stages}
    extra = {
        0: dict(bias_ptr=x, residual_ptr=x, stride_r=0, HAS_BIAS=False, HAS_RESIDUAL=False),
        1: dict(norm_weight_ptr=norm, bias_ptr=x, eps=1e-6, HAS_BIAS=False),
        2: dict(residual_ptr=x, stride_r=0, HAS_RESIDUAL=False),
    }[prologue]

    def launch(i: int) -> None:
        weight, out = weights[i % len(weights)], outs[i % len(outs)]
        KERNELS[prologue][grid](
            x_ptr=x, weight_ptr=weight, out_ptr=out, rows=rows, n=n, k=k, stride_x=x.stride(0),
            stride_w=weight.stride(0), stride_o=out.stride(0), BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_K=block_k, num_warps=warps, **options, **extra, **fold_args(None, rows, n, block_n, x),
        )  # fmt: skip

    return launch


def time_in_graph(launch: Callable[[int], None], copies: int) -> float:
    """Microseconds per launch, 2 × copies launches captured in one graph, replayed 5 times."""
    for i in range(copies):
        launch(i)
    torch.cuda.synchronize()
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        for i in range(2 * copies):
            launch(i)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (5 * 2 * copies)


def variants(rows: int, n: int, k: int, shipped: tuple) -> set[tuple]:
    found = {shipped}
    for block_n, elements, warps in itertools.product([1, 2, 4, 8, 16, 32], [4096, 8192, 16384], [4, 8]):
        block_k = min(triton.next_power_of_2(k), elements // block_n)
        if block_k >= 64:
            found.add((1, block_n, block_k, warps, None))
    if rows > 1:
        for block_k, warps, stages in itertools.product([64, 128, 256], [4, 8], [None, 3, 4]):
            found.add((16, 16, block_k, warps, stages))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--rows", default="1,5")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    sms = num_sms(device)
    results = []
    for name in args.shapes.split(","):
        prologue, n, k = SHAPES[name]
        copies = max(2, min(64, int(ROTATED_BYTES // (n * k * 2)) + 1))
        weights = [torch.randn(n, k, device=device, dtype=torch.bfloat16) / 32 for _ in range(copies)]
        norm = torch.ones(k, device=device, dtype=torch.bfloat16)
        for rows in map(int, args.rows.split(",")):
            x = torch.randn(rows, 2 * k if prologue == 2 else k, device=device, dtype=torch.bfloat16)
            outs = [torch.empty(rows, n, device=device, dtype=torch.bfloat16) for _ in range(4)]
            block_m, block_n, block_k = skinny_gemm.tile_shape(rows, n, k, sms, prologue == 2)
            warps = 8 if block_n * block_k >= skinny_gemm.TILE_ELEMENTS else 4
            shipped = (block_m, block_n, block_k, warps, None if block_m == 1 else skinny_gemm.DOT_STAGES)
            timed = []
            for variant in sorted(variants(rows, n, k, shipped), key=str):
                launch = launcher(prologue, x, weights, outs, norm, rows, n, k, variant)
                us = time_in_graph(launch, copies)
                timed.append((us, variant))
                results.append({"shape": name, "rows": rows, "variant": variant, "us": round(us, 2),
                                "shipped": variant == shipped})  # fmt: skip
            timed.sort()
            shipped_us = next(us for us, variant in timed if variant == shipped)
            print(f"{name} rows={rows}: shipped {shipped} {shipped_us:.2f} us; best:")
            for us, variant in timed[:4]:
                print(f"    {us:7.2f} us  {variant}")
        del weights
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
