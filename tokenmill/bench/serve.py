"""`python -m tokenmill bench serve`: online serving benchmark against any OpenAI-compatible server.

Requests arrive as a Poisson process (`request_rate`) or keep `max_concurrency` in flight; each streams,
and the client records time to first token (TTFT), the gaps between streamed chunks (ITL) and time per
output token after the first (TPOT). Bounded by the number of requests and a wall-clock limit.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass
class RequestRecord:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    output_tokens: int = 0
    gaps: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class ServeReport:
    url: str
    model: str
    requests: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_tokens_per_s: float
    goodput: float | None
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    errors: list[str]
    settings: dict[str, Any]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "mean": round(1000 * sum(ordered) / len(ordered), 3),
        "p50": round(1000 * at(0.5), 3),
        "p90": round(1000 * at(0.9), 3),
        "p99": round(1000 * at(0.99), 3),
    }


async def _one(
    client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, chat: bool
) -> RequestRecord:
    """Chat requests for dataset questions; completions with EOS ignored for random prompts."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": True, "temperature": 0,
                            "stream_options": {"include_usage": True}}  # fmt: skip
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body.update(prompt=prompt, ignore_eos=True)
    record = RequestRecord(ok=False)
    started = time.perf_counter()
    last = None
    try:
        async with client.stream(
            "POST", "/v1/chat/completions" if chat else "/v1/completions", json=body
        ) as reply:
            if reply.status_code != 200:
                record.error = f"HTTP {reply.status_code}: {(await reply.aread())[:200]!r}"
                return record
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    record.output_tokens = chunk["usage"]["completion_tokens"]
                text = "".join(
                    (c.get("delta") or {}).get("content") or c.get("text") or ""
                    for c in chunk.get("choices", [])
                )
                if text:
                    now = time.perf_counter()
                    if last is None:
                        record.ttft = now - started
                    else:
                        record.gaps.append(now - last)
                    last = now
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        return record
    record.e2e = time.perf_counter() - started
    record.ok = True
    return record


@dataclass
class LoadSettings:
    """How `run` loads the server: chat or completion requests of `max_tokens`, arriving as a Poisson
    process at `request_rate` (all at once when None), at most `max_concurrency` in flight."""

    url: str
    chat: bool
    max_tokens: int
    request_rate: float | None = None
    max_concurrency: int | None = None
    max_duration: float = 600.0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    seed: int = 0
    api_key: str | None = None


async def run(prompts: list[str], load: LoadSettings) -> ServeReport:
    headers = {"Authorization": f"Bearer {load.api_key}"} if load.api_key else {}
    limits = httpx.Limits(max_connections=(load.max_concurrency or len(prompts)) + 8)
    async with httpx.AsyncClient(
        base_url=load.url, timeout=load.max_duration, limits=limits, headers=headers
    ) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        gate = asyncio.Semaphore(load.max_concurrency or len(prompts))
        rng = random.Random(load.seed)

        async def limited(prompt: str) -> RequestRecord:
            async with gate:
                return await _one(client, model, prompt, load.max_tokens, load.chat)

        started = time.perf_counter()
        tasks = []
        for prompt in prompts:
            tasks.append(asyncio.ensure_future(limited(prompt)))
            if load.request_rate:
                await asyncio.sleep(rng.expovariate(load.request_rate))
        done, pending = await asyncio.wait(
            tasks, timeout=max(load.max_duration - (time.perf_counter() - started), 1)
        )
        for task in pending:
            task.cancel()
        duration = time.perf_counter() - started
    records = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    finished = [r for r in records if r.ok]
    tpots = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in finished if r.output_tokens > 1]
    good = None
    if load.slo_ttft_ms is not None or load.slo_tpot_ms is not None:
        good = sum(1 for r in finished if _meets_slo(r, load.slo_ttft_ms, load.slo_tpot_ms)) / duration
    return ServeReport(
        url=load.url,
        model=model,
        requests=len(prompts),
        completed=len(finished),
        failed=len(prompts) - len(finished),
        duration_s=round(duration, 3),
        request_throughput=round(len(finished) / duration, 3),
        output_tokens_per_s=round(sum(r.output_tokens for r in finished) / duration, 1),
        goodput=None if good is None else round(good, 3),
        ttft_ms=percentiles([r.ttft for r in finished]),
        tpot_ms=percentiles(tpots),
        itl_ms=percentiles([g for r in finished for g in r.gaps]),
        e2e_ms=percentiles([r.e2e for r in finished]),
        errors=sorted({r.error for r in records if r.error})[:10] + (["timed out"] if pending else []),
        settings={key: getattr(load, key) for key in ("max_tokens", "request_rate", "max_concurrency",
                                                      "max_duration", "slo_ttft_ms", "slo_tpot_ms")},
    )  # fmt: skip


def _meets_slo(record: RequestRecord, ttft_ms: float | None, tpot_ms: float | None) -> bool:
    if ttft_ms is not None and record.ttft * 1000 > ttft_ms:
        return False
    if tpot_ms is None or record.output_tokens <= 1:
        return True
    return (record.e2e - record.ttft) / (record.output_tokens - 1) * 1000 <= tpot_ms


def write_outputs(report: ServeReport, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "serve-report.json", out_dir / "serve-latency.png"
    json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"]
    for offset, key in enumerate(("p50", "p90", "p99")):
        ax.bar([i + offset * 0.25 for i in range(len(names))], [getattr(report, n)[key] for n in names], 0.25,
               label=key)  # fmt: skip
    ax.set_xticks([i + 0.25 for i in range(len(names))], [n.removesuffix("_ms") for n in names])
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title(f"{report.completed}/{report.requests} ok, {report.output_tokens_per_s:,.0f} output tok/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return [json_path, png_path]


_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "at",
    "this",
    "from",
    "or",
    "an",
    "are",
    "not",
    "have",
]


def random_prompts(count: int, words: int, seed: int = 0) -> list[str]:
    """Texts of about `words` tokens from common English words: valid for any server's tokenizer."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(count)]
