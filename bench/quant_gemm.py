"""Each quantized format's GEMM against bf16 cuBLAS on real projection shapes, on a GPU, in one call.

For every projection of the chosen presets (fused q|k|v, o, gate|up, down of Qwen3-8B and Qwen3-4B) and
every format, builds the `QuantLinear` the model would load (random weights, quantized at load), switches
it to its Triton GEMM exactly as the loader does (`use_triton_gemms`, size heuristics included) and times
y = layer(x) at M = 1, 16, 256 tokens with CUDA events (warm-up excluded, median of the timed runs). Reports
microseconds, the weight bytes the layer stores, achieved weight bytes/s, the speed-up over bf16, and the
largest error against the format's PyTorch reference `apply` relative to the output's largest magnitude.
Usage: PYTHONPATH=. python bench/quant_gemm.py [--presets qwen3-8b,qwen3-4b] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from torch import nn

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
    finally:
        torch.set_default_dtype(torch.float32)
    return layer


def time_call(call: Callable[[], torch.Tensor], repeat: int = 50) -> float:
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
                error = ((got - references[m]).abs().max() / references[m].abs().max()).item()
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="qwen3-8b,qwen3-4b")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda")
    report = {
        "device": torch.cuda.get_device_name(device),
        "rows": [row for preset in args.presets.split(",") for row in measure(preset, device)],
    }
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
