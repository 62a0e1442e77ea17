"""`python -m tokenmill bench`: offline throughput on named workloads, with the memory-bandwidth floor
of the same workload on the same device, measured in the same run, and optional transformers peers.

Prompts are random token ids from a fixed seed (or, for judge-358, the judge's questions through the chat
template), EOS is ignored and decoding is greedy, so every engine does exactly the same work. Timed runs
come after an untimed pass of the same requests, so no compile or graph capture is timed; `cold_start`
times the first batch after the engine starts instead, to show what a fresh server's first batch pays.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tokenmill.bench.compile_log import CompileLog
from tokenmill.bench.copy_workload import CopyWorkload
from tokenmill.bench.data_parallel import DataParallelOffline
from tokenmill.bench.judge_workload import JUDGE_QUESTIONS, JudgeWorkload
from tokenmill.bench.structured import compile_times_ms, workload_constraint
from tokenmill.config import EngineConfig
from tokenmill.engine.kv_cache_sizing import kv_bytes_per_block
from tokenmill.engine.llm import LLM
from tokenmill.engine.stats import StepStats
from tokenmill.lora.adapter import LoRARequest
from tokenmill.lora.random_adapters import write_random_adapters
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.tokenizer import Tokenizer


@dataclass(frozen=True)
class Workload:
    name: str
    num_prompts: int
    input_len: tuple[int, int]  # inclusive range
    output_len: tuple[int, int]

    def requests(self, tokenizer: Tokenizer, vocab_size: int) -> list[tuple[list[int], int]]:
        """Random prompts: the tokenizer plays no part."""
        return make_requests(self, vocab_size)


AnyWorkload = Workload | JudgeWorkload | CopyWorkload

WORKLOADS: dict[str, AnyWorkload] = {
    "qa-358": Workload("qa-358", 358, (48, 160), (200, 200)),
    "judge-358": JudgeWorkload("judge-358", JUDGE_QUESTIONS),
    "nano-256": Workload("nano-256", 256, (100, 1024), (100, 1024)),
    "single": Workload("single", 1, (128, 128), (256, 256)),
    "copy": CopyWorkload("copy"),
}


def make_requests(workload: Workload, vocab_size: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """(prompt token ids, output length) per request; the same for every engine given the same seed."""
    rng = random.Random(seed)
    requests = []
    for _ in range(workload.num_prompts):
        length = rng.randint(*workload.input_len)
        prompt = [rng.randrange(vocab_size) for _ in range(length)]
        requests.append((prompt, rng.randint(*workload.output_len)))
    return requests


@dataclass
class BenchResult:
    workload: str
    model: str
    engine: str
    device: str
    date: str
    kv_cache_dtype: str
    quantization: str  # --quantization, or "none" (a quantized checkpoint says so in `model`)
    # What every decode step reads at least once: the floor's weight term (rank 0's part under tensor
    # parallelism; None under data parallelism, whose weights stay in the replicas).
    weight_bytes: int | None
    num_prompts: int
    prompt_tokens: int
    output_tokens: int
    wall_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    time_per_decode_step_ms: float | None
    decode_steps_s: float
    prefill_steps_s: float
    peak_gpu_memory_gib: float | None
    copy_bandwidth_gb_s: float | None
    floor_tokens_per_s: float | None
    ratio_to_floor: float | None
    startup_s: float
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    peers: dict[str, float | str | None] = field(default_factory=dict)
    command: str = ""
    runs_s: list[float] = field(default_factory=list)  # every timed run; wall_s is their median
    spread_s: float = 0.0  # slowest minus fastest timed run
    cold_start: bool = False  # the first timed run is the first batch after the engine started
    startup_compiles: list[str] = field(default_factory=list)  # Triton variants built while starting
    compiles_in_timed_runs: list[list[str]] = field(default_factory=list)  # per timed run: must be empty
    lora: str | None = None  # e.g. "8 adapters of rank 16, round-robin over the requests"
    structured: str | None = None  # every request under a JSON schema (bench/structured.py)
    grammar_compile_ms: dict[str, float] | None = None  # per schema, uncached
    output_digest: str = ""  # of the last run's token ids: equal digests mean identical greedy output
    speculation: dict[str, str | int | float | None] = field(default_factory=dict)  # see speculation_report


def measure_copy_bandwidth(device: torch.device, gib: float = 1.0) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = int(gib * (1 << 30)) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    return 2 * n * 2 / sorted(times)[len(times) // 2]


def bytes_floor_seconds(
    requests: list[tuple[list[int], int]], weight_bytes: int, kv_bytes_per_token: int, bandwidth: float
) -> float:
    """Least time to move the bytes every decode step must touch (all weights once, each running
    sequence's whole KV context once), with every request decoding from the first step."""
    total = 0
    steps = max(out for _, out in requests)
    for step in range(steps):
        context = sum(len(prompt) + step for prompt, out in requests if out > step)
        total += weight_bytes + context * kv_bytes_per_token
    total += weight_bytes + sum(len(p) for p, _ in requests) * kv_bytes_per_token  # prefill writes
    return total / bandwidth


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


def run_hf(
    model_ref: str, requests: list[tuple[list[int], int]], device: torch.device, continuous: bool
) -> float:
    """Seconds transformers takes for the same requests: static batching with `generate` (one batch,
    left-padded, run to the longest output), or continuous batching with `generate_batch`."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_config(_hf_config(model_ref), dtype=torch.bfloat16)
    model = model.to(device).eval()
    longest = max(out for _, out in requests)
    with torch.no_grad():  # not inference_mode: transformers' continuous batching updates tensors in place
        if continuous:
            model.set_attn_implementation("paged|sdpa")
            config = GenerationConfig(
                max_new_tokens=longest, do_sample=False, eos_token_id=-1, pad_token_id=0
            )
            started = time.perf_counter()
            results = model.generate_batch(inputs=[p for p, _ in requests], generation_config=config)
            produced = sum(len(r.generated_tokens) for r in results.values())
            if len(results) != len(requests) or produced < sum(out for _, out in requests):
                raise RuntimeError(f"generate_batch returned {len(results)} results, {produced} tokens")
        else:
            width = max(len(p) for p, _ in requests)
            ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in requests], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in requests], device=device)
            started = time.perf_counter()
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=0,
            )
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return elapsed


def _hf_config(model_ref: str) -> Any:
    from transformers import AutoConfig

    from tokenmill.models.presets import preset_config

    if model_ref.startswith("random:"):
        raw = dict(preset_config(model_ref.removeprefix("random:")))
        architecture = raw.pop("architectures")[0]
        model_type = {"Qwen3ForCausalLM": "qwen3", "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
        return AutoConfig.for_model(model_type[architecture], **raw)
    return AutoConfig.from_pretrained(model_ref)


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
    peer_results: dict[str, float | str | None] = {}
    for peer in peers:
        key = {"hf": "hf_static_tokens_per_s", "hf-cb": "hf_cb_tokens_per_s"}[peer]
        try:
            peer_results[key] = round(
                output_tokens / run_hf(config.model or "", requests, device, peer == "hf-cb"), 1
            )
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            peer_results[key] = f"failed: {type(exc).__name__}: {exc}"[:300]
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
        out_dir.mkdir(parents=True, exist_ok=True)
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", (config.model or "default").removeprefix("random:"))
        model += f"-{config.quantization}" if config.quantization else ""
        device_name = re.sub(r"[^A-Za-z0-9]+", "-", result.device).strip("-").lower()
        spec = "" if config.speculative_method == "none" else f"-{config.speculative_method}"
        parallel = "".join(
            f"-{kind}{size}"
            for kind, size in (("tp", config.tensor_parallel_size), ("dp", config.data_parallel_size))
            if size > 1
        )
        name = workload.name + (f"-structured-{structured}" if structured else "")
        path = out_dir / (
            f"{name}-{model}-{result.kv_cache_dtype}{spec}{parallel}-{device_name}-{result.date}.json"
        )
        path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def speculation_report(config: EngineConfig, stats: StepStats) -> dict[str, str | int | float | None]:
    """The speculative-decoding settings and counters of the last timed run ({} without speculation);
    mean_accepted_length counts accepted proposals per verifying sequence-step."""
    if config.speculative_method == "none":
        return {}
    rate, length = stats.spec_acceptance_rate, stats.spec_mean_accepted_length
    return {
        "method": config.speculative_method,
        "num_speculative_tokens": config.num_speculative_tokens,
        "adaptive": config.speculative_adaptive,
        "drafts": stats.spec_drafts,
        "proposed_tokens": stats.spec_proposed_tokens,
        "accepted_tokens": stats.spec_accepted_tokens,
        "acceptance_rate": None if rate is None else round(rate, 3),
        "mean_accepted_length": None if length is None else round(length, 3),
    }
