"""`python -m tokenmill bench`: offline throughput on named workloads, with the memory-bandwidth floor
of the same workload on the same device, measured in the same run, and optional transformers peers.

This module runs the engine and times it; the requests come from workloads.py, the floor from
bytes_floor.py, the peers from hf_peers.py, and the record it returns and saves is result.py's.
EOS is ignored and decoding is greedy, so every engine does exactly the same work. Timed runs come
after an untimed pass of the same requests, so no compile or graph capture is timed; `cold_start`
times the first batch after the engine starts instead, to show what a fresh server's first batch pays.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tokenmill.bench.bytes_floor import bytes_floor_seconds, measure_copy_bandwidth
from tokenmill.bench.compile_log import CompileLog
from tokenmill.bench.data_parallel import DataParallelOffline
from tokenmill.bench.hf_peers import peer_throughputs
from tokenmill.bench.result import BenchResult, save_result, speculation_report
from tokenmill.bench.structured import compile_times_ms, workload_constraint
from tokenmill.bench.workloads import AnyWorkload
from tokenmill.config import EngineConfig
from tokenmill.engine.kv_cache_sizing import kv_bytes_per_block
from tokenmill.engine.llm import LLM
from tokenmill.engine.stats import StepStats
from tokenmill.lora.adapter import LoRARequest
from tokenmill.lora.random_adapters import write_random_adapters
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output import StructuredOutputsParams


@dataclass
class TimedRuns:
    seconds: list[float]
    compiled: list[list[str]]  # per run: the Triton variants it had to compile or load
    digest: str = ""  # sha256 of the last run's output token ids, in request order


def greedy_params(
    requests: list[tuple[list[int], int]], constraint: StructuredOutputsParams | None = None
) -> list[SamplingParams]:
    """Every engine does the same work: greedy, EOS ignored, each request's exact output length (under
    `constraint`, if any)."""
    return [
        SamplingParams(temperature=0, max_tokens=out, ignore_eos=True, structured_outputs=constraint)
        for _, out in requests
    ]


def run_tokenmill(
    llm: LLM | DataParallelOffline,
    requests: list[tuple[list[int], int]],
    repeat: int = 1,
    cold_start: bool = False,
    loras: list[LoRARequest] | None = None,
    constraint: StructuredOutputsParams | None = None,
) -> TimedRuns:
    """Times `repeat` runs of the whole batch, each one `generate` call (detokenization included),
    after an untimed run of the same requests unless `cold_start`; checks every token was produced.
    With `loras`, request i runs under adapter i % len(loras); with `constraint`, every request samples
    under that grammar."""
    prompts = [p for p, _ in requests]
    params = greedy_params(requests, constraint)
    lora_requests = [loras[i % len(loras)] for i in range(len(prompts))] if loras else None
    if not cold_start:
        llm.generate(prompts, params, use_tqdm=False, lora_request=lora_requests)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    runs = TimedRuns([], [])
    for _ in range(repeat):
        llm.engine.stats = StepStats()  # the step counters describe the last timed run
        with CompileLog() as compiles:
            started = time.perf_counter()
            outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora_requests)
            runs.seconds.append(time.perf_counter() - started)
        runs.compiled.append([variant.describe() for variant in compiles.variants])
        produced = sum(len(o.outputs[0].token_ids) for o in outputs)
        expected = sum(out for _, out in requests)
        if produced != expected:
            raise RuntimeError(f"tokenmill produced {produced} tokens, expected {expected}")
        runs.digest = output_digest([o.outputs[0].token_ids for o in outputs])
    return runs


def output_digest(token_ids: list[list[int]]) -> str:
    """A short sha256 of every request's output token ids, in request order: equal greedy outputs."""
    return hashlib.sha256(json.dumps(token_ids).encode()).hexdigest()[:16]


def benchmark(
    config: EngineConfig,
    workload: AnyWorkload,
    peers: list[str],
    command: str,
    out_dir: Path | None,
    repeat: int = 1,
    cold_start: bool = False,
    num_loras: int = 0,
    structured: str | None = None,
    prepare: Callable[[LLM, list[tuple[list[int], int]]], None] | None = None,
) -> BenchResult:
    """Run `workload` on an engine made from `config`. With `num_loras`, that many random adapters of
    rank `config.max_lora_rank` are written to a temporary directory and the requests spread over them
    round-robin; `structured` (see bench/structured.py) puts every request under a JSON schema (its
    compile times are measured in this process's engine, so not under data parallelism); `prepare` sees
    the engine and the requests first (e.g. to install a bench-only proposer)."""
    device = config.resolved_device()
    with CompileLog() as startup_compiles:
        started = time.perf_counter()
        data_parallel = config.data_parallel_size > 1
        llm = DataParallelOffline(config) if data_parallel else LLM(**config.model_dump())
        startup = time.perf_counter() - started
    try:  # a failed run still stops the tensor-parallel workers or data-parallel replicas
        engine = llm.engine
        requests = workload.requests(engine.tokenizer, engine.model_config.vocab_size)
        if prepare is not None:
            prepare(llm, requests)
        constraint, compile_ms = None, None
        if structured is not None:
            constraint = workload_constraint(structured, max(out for _, out in requests), engine.tokenizer)
            compile_ms = None if data_parallel else compile_times_ms(engine, constraint)
        with tempfile.TemporaryDirectory() as adapters_dir:
            loras = write_random_adapters(
                engine.model_config, Path(adapters_dir), num_loras, config.max_lora_rank, config.seed
            )
            runs = run_tokenmill(llm, requests, repeat, cold_start, loras, constraint)
        wall = statistics.median(runs.seconds)
        prompt_tokens = sum(len(p) for p, _ in requests)
        output_tokens = sum(out for _, out in requests)
        stats = engine.stats
        step_ms = 1000 * stats.decode_seconds / stats.decode_steps if stats.decode_steps else None
        peak = bandwidth = floor = None
        weights = None
        if not data_parallel:  # under tensor parallelism, rank 0's part: every rank reads its own at once
            weights = sum(p.numel() * p.element_size() for p in engine.runner.model.parameters())
        if device.type == "cuda" and weights is not None:
            peak = torch.cuda.max_memory_reserved(device) / (1 << 30)
            kv_per_token = kv_bytes_per_block(engine.runner.model, 1, engine.runner.kv_caches[0].dtype)
            bandwidth = measure_copy_bandwidth(device)
            floor = output_tokens / bytes_floor_seconds(requests, weights, kv_per_token, bandwidth)
    finally:
        llm.shutdown()
    del llm, engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    peer_results = peer_throughputs(peers, config.model or "", requests, device)
    result = BenchResult(
        workload=workload.name,
        model=config.model or "default",
        engine="tokenmill",
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        date=dt.date.today().isoformat(),
        kv_cache_dtype=config.kv_cache_dtype if config.kv_cache_dtype != "auto" else "bf16",
        quantization=config.quantization or "none",
        weight_bytes=weights,
        num_prompts=workload.num_prompts,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        wall_s=round(wall, 3),
        output_tokens_per_s=round(output_tokens / wall, 1),
        total_tokens_per_s=round((prompt_tokens + output_tokens) / wall, 1),
        time_per_decode_step_ms=None if step_ms is None else round(step_ms, 3),
        decode_steps_s=round(stats.decode_seconds, 3),
        prefill_steps_s=round(stats.other_seconds, 3),
        peak_gpu_memory_gib=None if peak is None else round(peak, 2),
        copy_bandwidth_gb_s=None if bandwidth is None else round(bandwidth / 1e9, 1),
        floor_tokens_per_s=None if floor is None else round(floor, 1),
        ratio_to_floor=None if floor is None else round(output_tokens / wall / floor, 3),
        startup_s=round(startup, 2),
        tensor_parallel_size=config.tensor_parallel_size,
        data_parallel_size=config.data_parallel_size,
        peers=peer_results,
        command=command,
        runs_s=[round(t, 3) for t in runs.seconds],
        spread_s=round(max(runs.seconds) - min(runs.seconds), 3),
        cold_start=cold_start,
        startup_compiles=[variant.describe() for variant in startup_compiles.variants],
        compiles_in_timed_runs=runs.compiled,
        lora=f"{num_loras} adapters of rank {config.max_lora_rank}, round-robin" if num_loras else None,
        structured=structured,
        grammar_compile_ms=compile_ms,
        output_digest=runs.digest,
        speculation=speculation_report(config, stats),
    )
    if out_dir is not None:
        save_result(result, config, out_dir)
    return result
