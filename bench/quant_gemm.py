"""Each quantized format's GEMM against bf16 cuBLAS on real projection shapes, on a GPU, in one call.

For every projection of the chosen presets (fused q|k|v, o, gate|up, down of Qwen3-8B and Qwen3-4B) and
every format, builds the `QuantLinear` the model would load (random weights, quantized at load), switches
it to its Triton GEMM exactly as the loader does (`use_triton_gemms`, size heuristics included) and times
y = layer(x) at M = 1, 16, 256 tokens with CUDA events (warm-up excluded, median of the timed runs). Reports
microseconds, the weight bytes the layer stores, achieved weight bytes/s, the speed-up over bf16, and the
largest error against the format's PyTorch reference `apply` relative to the output's largest magnitude;
then one summary line per preset, format and token count (mean speed-up over the projections).

`--crossover` times each format's two routes (its Triton kernel and its dense route, see
`triton_gemms.DENSE_FROM_TOKENS`) and bf16 cuBLAS, summed over a preset's projections, at 16 to 1024
tokens, and prints one line per format: the first token count from which the dense route stays faster
(what its `DENSE_FROM_TOKENS` entry should say) beside the entry it has now.
`--gemv` times, at 1, 2, 4 and 8 tokens, each format's decode GEMV (`quant_gemv`), its previous route
(the Triton GEMM kernel) and bf16 on the fused small-batch GEMV (`skinny_gemm.linear`, what bf16 decode
runs), each checked against the format's reference; one summary line per preset, format and token
count gives both quantized routes' speed-up over bf16 (what `GEMV_UP_TO_TOKENS` should say).
Usage: PYTHONPATH=. python bench/quant_gemm.py [--presets qwen3-8b,qwen3-4b] [--crossover | --gemv]
[--out x.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable

import torch
from torch import nn

from tokenmill.kernels.triton import skinny_gemm
from tokenmill.kernels.triton.gemv_fusion import NO_FUSION
from tokenmill.models.presets import preset_config
from tokenmill.quantization import QuantLinear, QuantMethod, UnquantizedMethod
from tokenmill.quantization.awq import AwqMethod
from tokenmill.quantization.fp8 import Fp8BlockMethod, Fp8ChannelMethod
from tokenmill.quantization.gptq import GptqMethod
from tokenmill.quantization.int8 import Int8WeightOnlyMethod
from tokenmill.quantization.triton_gemms import use_triton_gemms

FORMATS: dict[str, Callable[[], QuantMethod]] = {
    "bf16": UnquantizedMethod,
    "int8": Int8WeightOnlyMethod,
    "fp8-channel": Fp8ChannelMethod,
    "fp8-block": lambda: Fp8BlockMethod((128, 128), checkpoint_is_fp8=False),
    "awq": lambda: AwqMethod(128, checkpoint_is_awq=False),
    "gptq4": lambda: GptqMethod(4, 128, checkpoint_is_gptq=False),
    "gptq8": lambda: GptqMethod(8, 128, checkpoint_is_gptq=False),
}
TOKENS = (1, 16, 256)
GEMV_TOKENS = (1, 2, 4, 8)
CROSSOVER_TOKENS = (16, 32, 64, 96, 128, 192, 256, 384, 512, 1024)
# largest |kernel - reference| / max |reference|: bf16 output rounding, plus for fp8 the activation
# quantization that the fp8-dot kernels (sm_89+) and torch._scaled_mm add and the reference does not
TOLERANCE = {
    "bf16": 0.0,
    "int8": 0.02,
    "awq": 0.02,
    "gptq4": 0.02,
    "gptq8": 0.02,
    "fp8-channel": 0.08,
    "fp8-block": 0.08,
}


def projections(preset: str) -> dict[str, tuple[int, list[int]]]:
    """name -> (in_features, fused output shards) of one decoder layer."""
    cfg = preset_config(preset)
    hidden, inter, head_dim = cfg["hidden_size"], cfg["intermediate_size"], cfg.get("head_dim", 128)
    q, kv = cfg["num_attention_heads"] * head_dim, cfg["num_key_value_heads"] * head_dim
    return {
        "qkv": (hidden, [q, kv, kv]),
        "o": (q, [hidden]),
        "gate_up": (hidden, [inter, inter]),
        "down": (inter, [hidden]),
    }


def build(method: QuantMethod, inp: int, shards: list[int], device: torch.device) -> QuantLinear:
    """A layer as the loader makes it: bf16 parameters where unquantized, each shard loaded from bf16."""
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            layer = QuantLinear(inp, shards, False, method)
            for index, rows in enumerate(shards):
                layer.load("weight", torch.randn(rows, inp, dtype=torch.bfloat16) * 0.02, index)
            layer.after_loading()
    finally:
        torch.set_default_dtype(torch.float32)
    return layer


def time_call(call: Callable[[], object], repeat: int = 50) -> float:
    """Median microseconds of one `call`, replayed from a CUDA graph as decode steps are (so host launch
    cost is not counted), by CUDA events over batches of 10 replays; warm-up (compilation) excluded."""
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    graph.replay()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 100)  # ms per 10 replays -> us per call
    return statistics.median(times)


def weight_bytes(layer: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def measure(preset: str, device: torch.device) -> list[dict]:
    rows = []
    for name, (inp, shards) in projections(preset).items():
        baseline: dict[int, float] = {}
        for fmt, make in FORMATS.items():
            layer = build(make(), inp, shards, device)
            inputs = {m: torch.randn(m, inp, dtype=torch.bfloat16, device=device) for m in TOKENS}
            references = {m: layer(x).float() for m, x in inputs.items()}  # the method's PyTorch `apply`
            use_triton_gemms(layer)
            stored = weight_bytes(layer)
            for m, x in inputs.items():
                micros = time_call(lambda layer=layer, x=x: layer(x))
                got = layer(x).float()
                error = max_relative_error(got, references[m])
                if fmt == "bf16":
                    baseline[m] = micros
                row = {
                    "preset": preset, "projection": name, "in": inp, "out": sum(shards), "format": fmt,
                    "tokens": m, "us": round(micros, 2), "weight_bytes": stored,
                    "weight_gb_s": round(stored / micros / 1e3, 1),
                    "speedup_vs_bf16": round(baseline[m] / micros, 3), "max_rel_error": round(error, 5),
                    "matches_reference": error <= TOLERANCE[fmt],
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
            del layer
            torch.cuda.empty_cache()
    return rows


def max_relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference from `expected`, relative to its largest magnitude."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def summarize(rows: list[dict]) -> None:
    """One line per preset, format and token count: the mean speed-up over the projections."""
    keys = sorted({(r["preset"], r["format"], r["tokens"]) for r in rows if r["format"] != "bf16"})
    for preset, fmt, tokens in keys:
        picked = [r for r in rows if (r["preset"], r["format"], r["tokens"]) == (preset, fmt, tokens)]
        mean = statistics.mean(r["speedup_vs_bf16"] for r in picked)
        exact = all(r["matches_reference"] for r in picked)
        print(f"{preset} {fmt:12} M={tokens:<4} {mean:.2f}x bf16  matches_reference={exact}", flush=True)


def first_win(kernel_us: dict[int, float], dense_us: dict[int, float]) -> int | None:
    """The smallest token count from which the dense route is faster at every larger count measured."""
    start = None
    for tokens in sorted(kernel_us):
        wins = dense_us[tokens] < kernel_us[tokens]
        start = (start or tokens) if wins else None
    return start


def crossover(preset: str, device: torch.device) -> list[dict]:
    """Per format: each route's microseconds summed over the preset's projections per token count."""
    totals: dict[str, dict[str, dict[int, float]]] = {}
    keys: dict[str, str] = {}
    now: dict[str, int | None] = {}
    for inp, shards in projections(preset).values():
        inputs = {m: torch.randn(m, inp, dtype=torch.bfloat16, device=device) for m in CROSSOVER_TOKENS}
        for fmt, make in FORMATS.items():
            layer = build(make(), inp, shards, device)
            use_triton_gemms(layer)
            gemm = layer.method.gemm
            routes: dict[str, Callable[[QuantLinear, torch.Tensor], torch.Tensor]] = {}
            if gemm is None:
                routes["cublas"] = lambda layer, x: layer(x)
            else:
                keys[fmt], now[fmt] = gemm.table_key, gemm.dense_from()
                routes["kernel"] = gemm.kernel
                if gemm.dense is not None:
                    routes["dense"] = gemm.dense
            for route_name, route in routes.items():
                for m, x in inputs.items():
                    micros = time_call(lambda route=route, layer=layer, x=x: route(layer, x), repeat=20)
                    by_tokens = totals.setdefault(fmt, {}).setdefault(route_name, {})
                    by_tokens[m] = by_tokens.get(m, 0.0) + micros
            del layer
            torch.cuda.empty_cache()
    lines = []
    rounded = {
        fmt: {f"{route}_us": {m: round(us, 1) for m, us in by_m.items()} for route, by_m in routes.items()}
        for fmt, routes in totals.items()
    }
    for fmt, routes_us in totals.items():
        if fmt == "bf16":
            continue
        dense = routes_us.get("dense")
        line = {
            "crossover": preset, "format": fmt, "table_key": keys[fmt],
            "dense_from_tokens_now": now[fmt],
            "dense_wins_from": None if dense is None else first_win(routes_us["kernel"], dense),
            **rounded[fmt], "bf16_us": rounded["bf16"]["cublas_us"],
        }  # fmt: skip
        lines.append(line)
        print(json.dumps(line), flush=True)
    return lines


def _unfused(layer: nn.Module, x: torch.Tensor, gemv: Callable) -> torch.Tensor:
    return gemv(layer, x, NO_FUSION)


def gemv_rows(preset: str, device: torch.device) -> list[dict]:
    """Per projection, format and token count: the GEMV, the previous kernel and the bf16 GEMV."""
    rows = []
    for name, (inp, shards) in projections(preset).items():
        inputs = {m: torch.randn(m, inp, dtype=torch.bfloat16, device=device) for m in GEMV_TOKENS}
        weight = build(UnquantizedMethod(), inp, shards, device).weight
        bf16_us = {m: time_call(lambda x=x, w=weight: skinny_gemm.linear(x, w)) for m, x in inputs.items()}
        for fmt, make in FORMATS.items():
            if fmt == "bf16":
                continue
            layer = build(make(), inp, shards, device)
            references = {m: layer(x).float() for m, x in inputs.items()}
            use_triton_gemms(layer)
            gemm = layer.method.gemm
            for m, x in inputs.items():
                row = {"preset": preset, "projection": name, "format": fmt, "tokens": m}
                row["bf16_gemv_us"] = round(bf16_us[m], 2)
                for route_name in ("gemv", "kernel"):
                    route = getattr(gemm, route_name)
                    if route_name == "gemv":  # the GEMV takes the fused path's neighbours: none here
                        route = functools.partial(_unfused, gemv=route)
                    micros = time_call(lambda route=route, layer=layer, x=x: route(layer, x))
                    got = route(layer, x).float()
                    error = max_relative_error(got, references[m])
                    row.update({
                        f"{route_name}_us": round(micros, 2),
                        f"{route_name}_speedup_vs_bf16": round(bf16_us[m] / micros, 3),
                        f"{route_name}_matches_reference": error <= TOLERANCE[fmt],
                    })  # fmt: skip
                row["weight_gb_s_gemv"] = round(weight_bytes(layer) / row["gemv_us"] / 1e3, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del layer
            torch.cuda.empty_cache()
    return rows


def summarize_gemv(rows: list[dict]) -> None:
    """One line per preset, format and token count: both routes' speed-up over bf16, summed over the
    projections (a layer's time), and whether every output matched its reference."""
    keys = sorted({(r["preset"], r["format"], r["tokens"]) for r in rows})
    for preset, fmt, tokens in keys:
        picked = [r for r in rows if (r["preset"], r["format"], r["tokens"]) == (preset, fmt, tokens)]
        bf16 = sum(r["bf16_gemv_us"] for r in picked)
        gemv, kernel = (sum(r[f"{route}_us"] for r in picked) for route in ("gemv", "kernel"))
        exact = {route: all(r[f"{route}_matches_reference"] for r in picked) for route in ("gemv", "kernel")}
        print(
            f"{preset} {fmt:12} M={tokens}  gemv {bf16 / gemv:.2f}x  kernel {bf16 / kernel:.2f}x bf16 GEMV"
            f"  matches_reference gemv={exact['gemv']} kernel={exact['kernel']}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="qwen3-8b,qwen3-4b")
    parser.add_argument("--crossover", action="store_true", help="the token count where dense routes win")
    parser.add_argument("--gemv", action="store_true", help="decode GEMVs vs previous kernels vs bf16")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda")
    presets = args.presets.split(",")
    report: dict[str, object] = {"device": torch.cuda.get_device_name(device)}
    if args.crossover:
        report["crossover"] = [line for preset in presets for line in crossover(preset, device)]
    elif args.gemv:
        report["gemv"] = rows = [row for preset in presets for row in gemv_rows(preset, device)]
        summarize_gemv(rows)
    else:
        report["rows"] = rows = [row for preset in presets for row in measure(preset, device)]
        summarize(rows)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
