"""The judge's view of a fresh container: start `tokenmill serve` with an empty Triton cache, time how long
it takes to become ready, then time identical `POST /predict` batches of the judge's sample questions.
The first batch must run as fast as the second: nothing may compile inside it.

With `--offline`, the same prompts (the server's prompt builder) and sampling parameters (greedy,
`--max-new-tokens`) also run through the offline engine (`LLM.generate`, detokenized) in this process,
built after the first HTTP batch and given one untimed pass. From then on HTTP and offline batches
alternate (H, O, H, O, ...), so drift in the machine's speed falls on both sides alike; `http_vs_offline`
gives the ratio of the medians and of the minima (offline time over HTTP time: 1.0 means the server
adds nothing), each over the warm batches only (the cold first HTTP batch is `first_batch_s`). Both
engines then hold the GPU at once, so each is capped to `--max-gpu-memory` (KV cache included).

Each `--tree NAME=PATH` is a checkout to serve from (e.g. the code before and after a change, compared
in one run). After start-up and after each batch the script lists the kernels in the Triton cache, so a
variant compiled by a batch shows up by name.

Usage: python bench/first_batch.py --out first-batch.json [--tree after=.] [--model random:qwen3-0.6b]
       [--max-new-tokens 256] [--batches 9] [--offline]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import torch

from tokenmill.eval.datasets import load_items
from tokenmill.eval.local_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def cached_kernels(cache_dir: Path) -> Counter[str]:
    """Compiled variants per kernel name: Triton stores each in its own directory as <name>.json."""
    return Counter(
        path.stem
        for path in cache_dir.glob("*/*.json")
        if not path.name.startswith("__grp__") and (path.parent / f"{path.stem}.cubin").exists()
    )


class OfflineEngine:
    """The offline engine on the same prompts and parameters as the /predict batch; built on first use
    (after a fresh server's first batch, so that batch meets an idle GPU)."""

    def __init__(self, model: str, data: str, max_new_tokens: int, max_gpu_memory: str) -> None:
        self.model, self.data, self.max_gpu_memory = model, data, max_gpu_memory
        self.max_new_tokens = max_new_tokens
        self._llm: Any = None
        self._prompts: list[list[int]] = []

    def run(self) -> tuple[float, list[str]]:
        """One timed batch: seconds, and the answers as /predict would send them."""
        from tokenmill import SamplingParams
        from tokenmill.server.judge import strip_thinking

        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        if self._llm is None:
            self._build()
            self._llm.generate(self._prompts, params, use_tqdm=False)  # untimed
        begun = time.perf_counter()
        outputs = self._llm.generate(self._prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - begun
        return seconds, [strip_thinking(output.outputs[0].text) for output in outputs]

    def _build(self) -> None:
        from tokenmill import LLM
        from tokenmill.bench.judge_workload import JudgeWorkload

        self._llm = LLM(self.model, max_gpu_memory=self.max_gpu_memory if torch.cuda.is_available() else None)
        self._prompts = JudgeWorkload("judge", self.data).prompts(self._llm.tokenizer)


def serve_and_time(
    tree: Path,
    model: str,
    questions: list[str],
    args: argparse.Namespace,
    log: Path,
    offline: OfflineEngine | None,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="triton-cache-") as cache:
        cache_dir = Path(cache)
        port = free_port()
        path = os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])  # the tree's tokenmill first
        env = {**os.environ, "PYTHONPATH": path, "TRITON_CACHE_DIR": cache, "TOKENMILL_MODEL": model,
               "TOKENMILL_HOST": "127.0.0.1", "TOKENMILL_PORT": str(port)}  # fmt: skip
        if offline is not None and torch.cuda.is_available():
            env["TOKENMILL_MAX_GPU_MEMORY"] = args.max_gpu_memory
        started = time.perf_counter()
        with open(log, "a") as sink:
            sink.write(f"\n===== {tree} =====\n")
            sink.flush()
            command = [sys.executable, "-m", "tokenmill", "serve"]  # run in the tree: -m imports from the cwd
            server = subprocess.Popen(command, cwd=tree, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                ready_s = _wait_ready(client, server, started)
                variants = [cached_kernels(cache_dir)]
                seconds, chars, spans, offline_seconds, same_answers = [], [], [], [], []
                request = {"prompt": questions, "max_new_tokens": args.max_new_tokens, "temperature": 0.0}
                for _ in range(args.batches):
                    begun, wall_clock = time.perf_counter(), time.time()
                    response = client.post("/predict", json=request)
                    seconds.append(round(time.perf_counter() - begun, 3))
                    spans.append((round(wall_clock, 3), round(time.time(), 3)))
                    response.raise_for_status()
                    answers = response.json()["response"]
                    chars.append(sum(len(answer) for answer in answers))
                    variants.append(cached_kernels(cache_dir))
                    if offline is not None and len(seconds) > 1:  # H, O, H, O, ... after the cold batch
                        offline_s, offline_answers = offline.run()
                        offline_seconds.append(round(offline_s, 3))
                        same_answers.append(offline_answers == answers)
        finally:
            server.terminate()
            server.wait(60)
    result = {
        "ready_s": round(ready_s, 2),
        "batch_s": seconds,
        "first_batch_s": seconds[0],
        "first_to_second_speed": round(seconds[1] / seconds[0], 3) if len(seconds) > 1 else None,
        "answer_chars": chars,
        "batch_unix_times": spans,  # to line up with the server's log
        "variants_after_start": dict(variants[0]),
        "variants_added_by_batch": [dict(after - before) for before, after in itertools.pairwise(variants)],
    }
    if offline_seconds:
        result["offline_batch_s"] = offline_seconds
        result["http_vs_offline"] = _compare(seconds[1:], offline_seconds)
        result["answers_equal_offline"] = same_answers
    return result


def _compare(http: list[float], offline: list[float]) -> dict:
    """Each side's median and minimum over the alternating warm batches, and offline time over HTTP
    time for each (the minimum is the least disturbed run; the median resists one slow outlier)."""
    http_median, offline_median = statistics.median(http), statistics.median(offline)
    return {
        "pairs": len(offline),
        "http_median_s": http_median,
        "http_min_s": min(http),
        "offline_median_s": offline_median,
        "offline_min_s": min(offline),
        "ratio_of_medians": round(offline_median / http_median, 3),
        "ratio_of_mins": round(min(offline) / min(http), 3),
    }


def _wait_ready(client: httpx.Client, server: subprocess.Popen, started: float) -> float:
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            if client.get("/", timeout=5).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def _print_figures(name: str, result: dict) -> None:
    """One line per figure, for the log of a device call."""
    compiled = [i + 1 for i, kernels in enumerate(result["variants_added_by_batch"]) if kernels]
    lines = [
        f"ready after {result['ready_s']} s; HTTP batches {result['batch_s']} s",
        f"first batch on the fresh server {result['first_batch_s']} s; "
        f"second / first speed {result['first_to_second_speed']}",
        f"batches that compiled a kernel variant: {compiled or 'none'}",
    ]
    comparison = result.get("http_vs_offline")
    if comparison:
        lines += [
            f"offline batches {result['offline_batch_s']} s (alternating with HTTP batches 2..)",
            f"HTTP median {comparison['http_median_s']} s, min {comparison['http_min_s']} s; "
            f"offline median {comparison['offline_median_s']} s, min {comparison['offline_min_s']} s",
            f"offline / HTTP over {comparison['pairs']} pairs: ratio of medians "
            f"{comparison['ratio_of_medians']}, ratio of mins {comparison['ratio_of_mins']}",
            f"HTTP answers equal the offline ones: {result['answers_equal_offline']}",
        ]
    for line in lines:
        print(f"{name}: {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", default=None, help="NAME=PATH of a checkout to serve")
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--data", default=str(ROOT / "data" / "official_test.txt"))
    parser.add_argument("--batches", type=int, default=3, help="HTTP batches per server; the first is cold")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="sent with every /predict batch")
    parser.add_argument("--offline", action="store_true", help="alternate offline batches with the HTTP ones")
    parser.add_argument("--max-gpu-memory", default="32GiB", help="each engine's cap with --offline")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.offline and args.batches < 2:
        parser.error("--offline needs --batches >= 2 (the first HTTP batch is the cold one)")
    questions = [item.question for item in load_items(args.data)]
    trees = [entry.partition("=")[::2] for entry in args.tree or [f"current={ROOT}"]]
    log = args.out.with_suffix(".log")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results: dict = {"model": args.model, "device": device, "questions": len(questions),
                     "date": dt.date.today().isoformat()}  # fmt: skip
    offline = None
    if args.offline:
        offline = OfflineEngine(args.model, args.data, args.max_new_tokens, args.max_gpu_memory)
    for name, path in trees:
        results[name] = serve_and_time(Path(path).resolve(), args.model, questions, args, log, offline)
        _print_figures(name, results[name])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
