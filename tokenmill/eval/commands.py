"""The judge-side commands: `eval` (act as the judge, or score files), `tune` (search serving knobs) and
`judge-sim` (rehearse the judge's run against a server started as the image would)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def _eval(args: argparse.Namespace) -> int:
    if args.action == "score":
        from tokenmill.eval.judge import score_files

        if not (args.refs and args.preds):
            raise ValueError("eval score needs --refs and --preds")
        result = score_files(Path(args.refs), Path(args.preds))
        print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return 0
    from dataclasses import asdict

    from tokenmill.eval.datasets import load_items
    from tokenmill.eval.judge import JudgeOptions, evaluate, write_outputs

    if not args.data:
        raise ValueError("eval needs --data (a question file, .docx or .jsonl)")
    items = load_items(args.data)[: args.limit]
    options = JudgeOptions(
        repeat=args.repeat,
        concurrency=args.concurrency,
        threshold=args.threshold,
        health_timeout=args.health_timeout,
        predict_timeout=args.predict_timeout,
    )
    report, per_item = evaluate(args.url, items, args.data, options)
    paths = write_outputs(report, per_item, Path(args.out_dir))
    print(json.dumps(asdict(report), ensure_ascii=False, indent=2))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if report.passed else 1


def _tune(args: argparse.Namespace) -> int:
    from tokenmill.eval.datasets import load_items
    from tokenmill.eval.tune import TuneOptions, tune

    items = load_items(args.data)[: args.limit]
    space: dict[str, list[Any]] = {"max_new_tokens": [int(v) for v in args.max_new_tokens.split(",")]}
    if args.batch_sizes:
        space["max_num_seqs"] = [int(v) for v in args.batch_sizes.split(",")]
    if args.kv_cache_dtypes:
        space["kv_cache_dtype"] = args.kv_cache_dtypes.split(",")
    if args.system_prompts:
        text = Path(args.system_prompts).read_text(encoding="utf-8")
        prompts = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [line for line in text.splitlines() if line]
        )
        space["system_prompt"] = [None, *prompts]
    if args.stop_sets:
        space["stop"] = [[], *json.loads(args.stop_sets)]
    options = TuneOptions(
        out_dir=Path(args.out_dir),
        model=args.model,
        device=args.device,
        port=args.port,
        threshold=args.threshold,
        margin=args.margin,
        max_trials=args.trials,
        time_budget=args.time_budget,
    )
    best, _ = tune(items, space, options)
    print((Path(args.out_dir) / "trials.md").read_text())
    print((Path(args.out_dir) / "best.env").read_text())
    return 0 if best is not None and best.feasible else 1


def _judge_sim(args: argparse.Namespace) -> int:
    from tokenmill.eval.datasets import load_items
    from tokenmill.eval.judge_sim import SimOptions, as_dict, simulate

    items = load_items(args.data or _repository_file("data/official_test.txt", "--data"))[: args.limit]
    overrides = {"TOKENMILL_MODEL": args.model} if args.model else {}
    if args.device:
        overrides["TOKENMILL_DEVICE"] = args.device
    dockerfile = Path(args.dockerfile) if args.dockerfile else _repository_file("Dockerfile", "--dockerfile")
    options = SimOptions(
        dockerfile=dockerfile,
        settings_file=Path(args.env_file) if args.env_file else None,
        overrides=overrides,
        gpu_memory=args.gpu_memory,
        threshold=args.threshold,
        health_limit=args.health_limit,
        predict_limit=args.predict_limit,
        log=Path(args.log) if args.log else None,
    )
    report = simulate(items, options)
    print(json.dumps(as_dict(report), ensure_ascii=False, indent=2))
    print("PASS" if report.passed else f"FAIL: {report.failure}", file=sys.stderr)
    return 0 if report.passed else 1


def _repository_file(relative: str, flag: str) -> Path:
    """A default that ships in the git repository (the judge's sample data, the Dockerfile), found from
    this source tree whatever the working directory; the installed package does not carry them."""
    path = REPOSITORY_ROOT / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"no {flag} given and {path} is not here: it ships in the git repository, "
            f"not in the installed package; pass {flag}"
        )
    return path


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="act as the judge against a running server (or `eval score`)")
    evaluate.add_argument("action", nargs="?", choices=["run", "score"], default="run")
    evaluate.add_argument("--url", default="http://127.0.0.1:8000")
    evaluate.add_argument(
        "--data", help="question file, .docx QA file, or .jsonl (chat rows or id/prompt/reference)"
    )
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N items")
    evaluate.add_argument("--repeat", type=int, default=1, help="run the judge's procedure N times")
    evaluate.add_argument("--concurrency", type=int, default=1, help="single mode: requests in flight")
    evaluate.add_argument("--threshold", type=float, default=0.35, help="the accuracy pass mark")
    evaluate.add_argument("--health-timeout", type=float, default=420.0)
    evaluate.add_argument("--predict-timeout", type=float, default=360.0)
    evaluate.add_argument("--out-dir", default="eval-out", help="report.json, items.jsonl, plots")
    evaluate.add_argument("--refs", help="score: JSONL of {id, prompt, reference}")
    evaluate.add_argument("--preds", help="score: JSONL of {id, response}")
    evaluate.add_argument("--json", action="store_true", help="score: print one JSON object")
    evaluate.set_defaults(handler=_eval)

    tuner = commands.add_parser("tune", help="search serving knobs for judge speed under the accuracy floor")
    tuner.add_argument("--data", required=True, help="local QA set (any format eval reads)")
    tuner.add_argument("--limit", type=int, default=None)
    tuner.add_argument("--model", default=None)
    tuner.add_argument("--device", default="auto")
    tuner.add_argument("--port", type=int, default=8765)
    tuner.add_argument(
        "--max-new-tokens", default="256,128,512", help="values to try, the first is the start"
    )
    tuner.add_argument("--batch-sizes", default=None, help="e.g. 256,512")
    tuner.add_argument("--kv-cache-dtypes", default=None, help="e.g. auto,fp8")
    tuner.add_argument("--system-prompts", default=None, help="file: one prompt a line, or a JSON list")
    tuner.add_argument("--stop-sets", default=None, help="JSON list of stop-string lists")
    tuner.add_argument("--threshold", type=float, default=0.35)
    tuner.add_argument("--margin", type=float, default=0.02, help="safety margin above the threshold")
    tuner.add_argument("--trials", type=int, default=12)
    tuner.add_argument("--time-budget", type=float, default=1800.0, help="seconds")
    tuner.add_argument("--out-dir", default="tune-out", help="trials.md, trials.json, best.env")
    tuner.set_defaults(handler=_tune)

    sim = commands.add_parser(
        "judge-sim", help="rehearse the judge's run: serve as the image would, then judge it"
    )
    sim.add_argument(
        "--data",
        default=None,
        help="the question file the judge would send (default: data/official_test.txt)",
    )
    sim.add_argument("--limit", type=int, default=None, help="only the first N questions")
    sim.add_argument(
        "--dockerfile", default=None, help="whose ENV the server starts with (default: the repository's)"
    )
    sim.add_argument("--env-file", default=None, help="settings on top (e.g. tune's best.env)")
    sim.add_argument(
        "--model",
        default=None,
        help="a local model in place of the image's /app/model (needed outside the image)",
    )
    sim.add_argument("--device", default=None)
    sim.add_argument("--gpu-memory", default=None, help="cap GPU memory, e.g. 32GiB to emulate an RTX 5090")
    sim.add_argument("--threshold", type=float, default=0.35)
    sim.add_argument("--health-limit", type=float, default=420.0, help="seconds the judge waits for GET /")
    sim.add_argument(
        "--predict-limit", type=float, default=360.0, help="seconds the judge waits for /predict"
    )
    sim.add_argument("--log", default=None, help="write the server's output here")
    sim.set_defaults(handler=_judge_sim)
