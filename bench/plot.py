"""Draw docs/benchmarks.png from bench/results/*.json: output tokens/s per run, ours beside the
transformers peers and the bytes floor. Usage: python bench/plot.py"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    runs = [json.loads(p.read_text()) for p in sorted((ROOT / "bench" / "results").glob("*.json"))]
    runs = [r for r in runs if "workload" in r]
    labels = [_label(r) for r in runs]
    series = {
        "tokenmill": [r["output_tokens_per_s"] for r in runs],
        "transformers static": [_number(r["peers"].get("hf_static_tokens_per_s")) for r in runs],
        "transformers continuous": [_number(r["peers"].get("hf_cb_tokens_per_s")) for r in runs],
        "bytes floor": [r["floor_tokens_per_s"] for r in runs],
    }
    fig, ax = plt.subplots(figsize=(14, 6))
    width = 0.2
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - 1.5) * width for x in range(len(runs))]
        bars = ax.bar(xs, [v or 0 for v in values], width, label=name)
        for bar, value in zip(bars, values):
            if value:
                ax.annotate(
                    f"{value:,.0f}",
                    (bar.get_x() + width / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    ax.set_yscale("log")
    ax.set_ylim(top=4 * max(v for values in series.values() for v in values if v))
    ax.set_ylabel("output tokens/s (log)")
    ax.set_xticks(range(len(runs)), labels, fontsize=7, rotation=60, ha="right")
    dates = sorted(r["date"] for r in runs)
    ax.set_title(f"tokenmill offline throughput (bench/results/*.json), {dates[0]} to {dates[-1]}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "benchmarks.png", dpi=120)


def _label(run: dict) -> str:
    """Workload, model, KV cache (and weight format), parallelism and GPU of one run."""
    model = run["model"].removeprefix("random:")
    weights = "" if run.get("quantization", "none") == "none" else f" w-{run['quantization']}"
    parallel = "".join(
        f" {kind}{run[key]}" for kind, key in (("tp", "tensor_parallel_size"), ("dp", "data_parallel_size"))
        if run.get(key, 1) > 1
    )  # fmt: skip
    grammar = f" {run['structured']}-schema" if run.get("structured") else ""
    gpu = run["device"].replace("NVIDIA ", "").split(" ")[0]
    return f"{run['workload']} {model} kv-{run['kv_cache_dtype']}{weights}{parallel}{grammar} · {gpu}"


def _number(value: object) -> float | None:
    return value if isinstance(value, (int, float)) else None


if __name__ == "__main__":
    main()
