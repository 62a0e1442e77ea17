"""A single stream's two kinds of step, timed apart for each weight format, to the microsecond.

- Decode: the one-sequence decode graph (every layer of a one-token step; the LM head and sampling run
  after it) replayed back to back, timed with CUDA events: the median of 7 blocks of 200 replays. Two
  trees compared this way differ by their kernels alone, with none of the ±2-3% that a 256-token
  `quant_models.py` run moves by.
- Prefill: the forward pass of a fresh 128-token prompt (eager, or a graph's replay where one runs
  it; the output says which), as the host launches it (`ModelRunner.run_model` returning) and as the
  GPU runs it (CUDA events around it); the best of 3 prompts. Where the two times are equal the GPU
  waited on the host's launches.

Each format loads `random:<preset>` as `quant_models.py` does and runs one untimed request first.
Usage: PYTHONPATH=. python bench/step_times.py [--model random:qwen3-8b] [--formats none,fp8,awq]
       [--out step-times.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.engine.step_inputs import StepInputs

PROMPT_TOKENS = 128
REPLAY_BLOCKS, REPLAYS_PER_BLOCK = 7, 200


def decode_graph_us(llm: LLM) -> dict[str, float]:
    """Median, least and most µs per replay of the one-sequence decode graph over REPLAY_BLOCKS blocks."""
    graphs = llm.engine.runner.graphs
    for _ in range(50):
        graphs.replay_as_is(1)
    torch.cuda.synchronize()
    times = []
    for _ in range(REPLAY_BLOCKS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(REPLAYS_PER_BLOCK):
            graphs.replay_as_is(1)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / REPLAYS_PER_BLOCK)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def prefill_ms(llm: LLM, params: SamplingParams, trials: int = 3) -> dict[str, float | bool]:
    """Host (launch) and GPU ms of a fresh prompt's forward pass, the best of `trials` prompts."""
    runner = llm.engine.runner
    run_model = runner.run_model
    seen: list[tuple[float, float, bool]] = []

    def timed(inputs: StepInputs, use_graph: bool) -> torch.Tensor | None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        began = time.perf_counter()
        start.record()
        out = run_model(inputs, use_graph)
        end.record()
        host = time.perf_counter() - began
        if inputs.num_decodes < inputs.num_rows:  # the prompt's step, not a decode's
            end.synchronize()
            seen.append((host * 1e3, start.elapsed_time(end), use_graph))
        return out

    runner.run_model = timed
    try:
        for trial in range(trials):
            first = 1000 + trial * PROMPT_TOKENS
            llm.generate([list(range(first, first + PROMPT_TOKENS))], params, use_tqdm=False)
    finally:
        runner.run_model = run_model
    host, gpu, graph = min(seen, key=lambda step: step[1])
    return {"host_launch": host, "gpu": gpu, "graph": graph}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:qwen3-8b")
    parser.add_argument("--formats", default="none,fp8,awq", help="none: bf16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    results = {"model": args.model, "device": torch.cuda.get_device_name(), "formats": {}}
    for fmt in args.formats.split(","):
        llm = LLM(
            model=args.model, quantization=None if fmt == "none" else fmt, max_num_seqs=1,
            max_model_len=512, num_kv_blocks=64,
        )  # fmt: skip
        llm.generate([list(range(100, 100 + PROMPT_TOKENS))], params, use_tqdm=False)
        decode, prefill = decode_graph_us(llm), prefill_ms(llm, params)
        results["formats"][fmt] = {"decode_graph_us": decode, "prefill_ms": prefill}
        print(
            f"{args.model} {fmt:5} decode graph {decode['median']:8.1f} us (min {decode['min']:.1f}, "
            f"max {decode['max']:.1f})  prefill of {PROMPT_TOKENS}: host {prefill['host_launch']:.2f} ms, "
            f"GPU {prefill['gpu']:.2f} ms{' (graph)' if prefill['graph'] else ' (eager)'}",
            flush=True,
        )
        llm.shutdown()
        del llm
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
