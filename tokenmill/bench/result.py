"""What one offline benchmark run records, and the file it is saved in.

`BenchResult` is the record `bench` prints and archives under bench/results/: its fields and the file's
name are the format every archived result and plot reads, so they are defined here, in one place, apart
from the code that runs the engine and times it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tokenmill.config import EngineConfig
from tokenmill.engine.stats import StepStats


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


def save_result(result: BenchResult, config: EngineConfig, out_dir: Path) -> Path:
    """Writes `result` as JSON in `out_dir`, named by workload, model, weight and KV formats, speculation,
    parallelism, device and date."""
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
    name = result.workload + (f"-structured-{result.structured}" if result.structured else "")
    path = out_dir / (
        f"{name}-{model}-{result.kv_cache_dtype}{spec}{parallel}-{device_name}-{result.date}.json"
    )
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return path


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
