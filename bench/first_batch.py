"""The judge's view of a fresh container: start `tokenmill serve` with an empty Triton cache, time how long
it takes to become ready, then time identical `POST /predict` batches of the judge's sample questions.
The first batch must run as fast as the second: nothing may compile inside it.

With `--offline`, the same prompts (the server's prompt builder) and sampling parameters (greedy,
`--max-new-tokens`) then run through the offline engine in this process, an untimed pass first, so
`http_vs_offline` says what HTTP, admission and the server's threads cost a judged batch.

Each `--tree NAME=PATH` is a checkout to serve from (e.g. the code before and after a change, compared
in one run). After start-up and after each batch the script lists the kernels in the Triton cache, so a
variant compiled by a batch shows up by name.

Usage: python bench/first_batch.py --out first-batch.json [--tree after=.] [--model random:qwen3-0.6b]
       [--max-new-tokens 256] [--offline]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

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


def serve_and_time(
    tree: Path, model: str, questions: list[str], batches: int, max_new_tokens: int, log: Path
) -> dict:
    with tempfile.TemporaryDirectory(prefix="triton-cache-") as cache:
        cache_dir = Path(cache)
        port = free_port()
        path = os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])  # the tree's tokenmill first
        env = {**os.environ, "PYTHONPATH": path, "TRITON_CACHE_DIR": cache, "TOKENMILL_MODEL": model,
               "TOKENMILL_HOST": "127.0.0.1", "TOKENMILL_PORT": str(port)}  # fmt: skip
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
                seconds, chars, spans = [], [], []
                for _ in range(batches):
                    begun, wall_clock = time.perf_counter(), time.time()
                    request = {"prompt": questions, "max_new_tokens": max_new_tokens, "temperature": 0.0}
                    response = client.post("/predict", json=request)
                    seconds.append(round(time.perf_counter() - begun, 3))
                    spans.append((round(wall_clock, 3), round(time.time(), 3)))
                    response.raise_for_status()
                    chars.append(sum(len(answer) for answer in response.json()["response"]))
                    variants.append(cached_kernels(cache_dir))
        finally:
            server.terminate()
            server.wait(60)
    return {
        "ready_s": round(ready_s, 2),
        "batch_s": seconds,
        "first_to_second_speed": round(seconds[1] / seconds[0], 3) if len(seconds) > 1 else None,
        "answer_chars": chars,
        "batch_unix_times": spans,  # to line up with the server's log
        "variants_after_start": dict(variants[0]),
        "variants_added_by_batch": [dict(after - before) for before, after in itertools.pairwise(variants)],
    }


def offline_time(model: str, data: str, batches: int, max_new_tokens: int) -> dict:
    """The same batch through `LLM.generate` (detokenized), after one untimed pass of it."""
    from tokenmill import LLM, SamplingParams
    from tokenmill.bench.judge_workload import JudgeWorkload

    llm = LLM(model)
    prompts = JudgeWorkload("judge", data).prompts(llm.tokenizer)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    llm.generate(prompts, params, use_tqdm=False)
    seconds, chars = [], []
    for _ in range(batches):
        begun = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds.append(round(time.perf_counter() - begun, 3))
        chars.append(sum(len(output.outputs[0].text) for output in outputs))
    return {"batch_s": seconds, "answer_chars": chars}


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


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", default=None, help="NAME=PATH of a checkout to serve")
    parser.add_argument("--model", default="random:qwen3-0.6b")
    parser.add_argument("--data", default=str(ROOT / "data" / "official_test.txt"))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="sent with every /predict batch")
    parser.add_argument("--offline", action="store_true", help="also time the batch on the offline engine")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    questions = [item.question for item in load_items(args.data)]
    trees = [entry.partition("=")[::2] for entry in args.tree or [f"current={ROOT}"]]
    log = args.out.with_suffix(".log")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results: dict = {"model": args.model, "device": device, "questions": len(questions),
                     "date": dt.date.today().isoformat()}  # fmt: skip
    for name, path in trees:
        tree = Path(path).resolve()
        results[name] = serve_and_time(tree, args.model, questions, args.batches, args.max_new_tokens, log)
        print(name, json.dumps(results[name]), flush=True)
    if args.offline:
        offline = offline_time(args.model, args.data, args.batches, args.max_new_tokens)
        served = results[trees[-1][0]]["batch_s"][1:] or results[trees[-1][0]]["batch_s"]
        offline["http_vs_offline"] = round(_median(offline["batch_s"]) / _median(served), 3)
        results["offline"] = offline
        print("offline", json.dumps(offline), flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
