"""The decode GEMVs of Qwen3-8B's projections at one token, timed as they run in a decode step: each
launch on its own copy of the weights (copies enough to rotate through more than the L2, so every launch
reads HBM), all inside one CUDA graph. Prints us per launch and TB/s of weight bytes for bf16 (the fused
GEMVs of `skinny_gemm`) and each quantized format (`quant_gemv.gemv`, which routes 4-bit weights to
`int4_gemv`), with each projection's fusion (RMSNorm prologue for q|k|v and gate|up, residual epilogue
for o, SiLU-and-mul prologue and residual for down). Replaying one weight instead would time the L2
for the 4-bit formats, whose projections it holds.

Usage: PYTHONPATH=. python bench/quant_gemv_hbm.py [--formats bf16,fp8-channel,int8,gptq4,awq]
[--sweep] (also `GemvShape`s of the byte and packed kernels) [--out results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import torch
from quant_gemm import FORMATS, build, projections

from tokenmill.kernels.triton import quant_gemv, skinny_gemm
from tokenmill.kernels.triton.gemv_fusion import Fusion
from tokenmill.quantization.triton_gemms import packed_weight

ROTATED_BYTES = 400e6  # weight bytes each timed graph streams: eight times an H100's or H200's L2
FUSIONS = {"qkv": "norm", "o": "residual", "gate_up": "norm", "down": "silu"}
SWEEP = {
    False: [quant_gemv.GemvShape(n, t) for n, t in itertools.product((8, 16, 32), (16384, 32768, 65536))],
    True: [quant_gemv.GemvShape(n, t) for n, t in itertools.product((16, 32, 64), (8192, 16384, 32768))],
}


def weight_bytes(layer: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def time_launches(calls: list, replays: int = 20) -> float:
    """Microseconds per launch of `calls` captured in one CUDA graph (compiled and warmed outside)."""
    for call in calls[:2]:
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / (replays * len(calls))


def bf16_call(kind: str, x: torch.Tensor, norm: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor):
    if kind == "norm":
        return lambda: skinny_gemm.rms_norm_linear(x, norm, 1e-6, weight)
    if kind == "silu":
        return lambda: skinny_gemm.silu_mul_linear(x, weight, residual=residual)
    return lambda: skinny_gemm.linear(x, weight, residual=residual)


def measure(
    fmt: str, name: str, inp: int, shards: list[int], sweep: bool, device: torch.device
) -> list[dict]:
    first = build(FORMATS[fmt](), inp, shards, device)
    size = weight_bytes(first)
    copies = max(2, math.ceil(ROTATED_BYTES / size))
    layers = [first] + [build(FORMATS[fmt](), inp, shards, device) for _ in range(copies - 1)]
    kind = FUSIONS[name]
    x = torch.randn(1, 2 * inp if kind == "silu" else inp, dtype=torch.bfloat16, device=device)
    norm = torch.randn(inp, dtype=torch.bfloat16, device=device)
    residual = torch.randn(1, sum(shards), dtype=torch.bfloat16, device=device)
    if fmt == "bf16":
        timed = {"default": time_launches([bf16_call(kind, x, norm, residual, la.weight) for la in layers])}
    else:
        fusion = Fusion(
            norm=(norm, 1e-6) if kind == "norm" else None,
            silu_mul=kind == "silu",
            residual=residual if kind != "norm" else None,
        )
        packed = [packed_weight(layer) for layer in layers]
        shapes = [None] + (SWEEP[packed[0].format >= 2] if sweep else [])
        timed = {
            repr(shape) if shape else "default": time_launches(
                [lambda p=p, s=shape: quant_gemv.gemv(x, p, fusion, s) for p in packed]
            )
            for shape in shapes
        }
    lines = [
        dict(format=fmt, projection=name, shape=shape, us=round(us, 2), tb_per_s=round(size / us / 1e6, 3))
        for shape, us in timed.items()
    ]
    for line in lines:
        print(json.dumps(line), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--formats", default="bf16,fp8-channel,int8,gptq4,awq")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda")
    lines = []
    for fmt in args.formats.split(","):
        for name, (inp, shards) in projections("qwen3-8b").items():
            lines += measure(fmt, name, inp, shards, args.sweep, device)
            torch.cuda.empty_cache()
    for fmt in args.formats.split(","):
        default = [line for line in lines if line["format"] == fmt and line["shape"] == "default"]
        parts = ", ".join(f"{line['projection']} {line['us']}" for line in default)
        print(f"{fmt:12s} one layer's four GEMVs: {sum(line['us'] for line in default):7.2f} us ({parts})")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"device": torch.cuda.get_device_name(device), "lines": lines}, file, indent=2)


if __name__ == "__main__":
    main()
