"""Command line: `python -m tokenmill <command>` (also the `tokenmill` console script)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from tokenmill.config import EngineConfig, ServerConfig
from tokenmill.sampling_params import SamplingParams


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type[BaseModel], title: str) -> None:
    """One --flag per config field, so the CLI can never drift from the config object."""
    group = parser.add_argument_group(title)
    for name, field in config_class.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = str(field.annotation)
        if field.annotation is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=field.description
            )
        elif "list" in annotation:
            group.add_argument(flag, action="append", default=None, help=f"{field.description} (repeatable)")
        else:
            choices = get_args(field.annotation) if "Literal" in annotation else None
            group.add_argument(
                flag, default=None, choices=choices, type=_field_type(annotation), help=field.description
            )


def _field_type(annotation: str) -> type:
    if "float" in annotation:
        return float
    if "int" in annotation:
        return int
    return str


def given_arguments(args: argparse.Namespace, config_class: type[BaseModel]) -> dict[str, Any]:
    """The flags the user actually set (others stay unset, so environment variables can apply)."""
    return {
        name: getattr(args, name)
        for name in config_class.model_fields
        if getattr(args, name, None) is not None
    }


def _generate(args: argparse.Namespace) -> int:
    from tokenmill.engine.llm import LLM

    llm = LLM(**EngineConfig(**given_arguments(args, EngineConfig)).model_dump())
    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.sampling_seed
    )
    started = time.perf_counter()
    if args.raw or not llm.tokenizer.has_chat_template:
        outputs = llm.generate(args.prompt, params, use_tqdm=False)
    else:
        outputs = llm.chat([[{"role": "user", "content": p}] for p in args.prompt], params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    for output in outputs:
        print(output.outputs[0].text)
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(f"[{tokens} tokens in {elapsed:.2f}s, {tokens / elapsed:.1f} tok/s]", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from tokenmill.server.launcher import serve

    config = ServerConfig(**given_arguments(args, ServerConfig))
    logging.getLogger().setLevel(config.log_level.upper())
    return serve(config)


def _bench(args: argparse.Namespace) -> int:
    if args.mode == "serve":
        return _bench_serve(args)
    from tokenmill.bench.judge_workload import JudgeWorkload
    from tokenmill.bench.offline import WORKLOADS, Workload, benchmark

    if args.workload == "custom":
        workload = Workload(
            "custom", args.num_prompts, _length_range(args.input_len), _length_range(args.output_len)
        )
    elif args.workload == "judge-358" and args.data:
        workload = JudgeWorkload("judge-358", args.data)
    else:
        workload = WORKLOADS[args.workload]
    given = given_arguments(args, EngineConfig)
    given.setdefault("max_num_seqs", max(workload.num_prompts, 1))  # the whole workload in one batch
    config = EngineConfig(**given)
    command = "python -m tokenmill " + " ".join(sys.argv[1:])
    result = benchmark(
        config, workload, args.peer or [], command, None if args.no_save else Path(args.out_dir),
        args.repeat, args.cold_start,
    )  # fmt: skip
    width = max(len(k) for k in vars(result))
    for key, value in vars(result).items():
        print(f"{key:<{width}}  {value}")
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from tokenmill.bench.serve import random_prompts, run, write_outputs
    from tokenmill.eval.datasets import load_items

    if args.data:
        prompts, chat = [item.question for item in load_items(args.data)][: args.num_prompts], True
    else:
        prompts, chat = random_prompts(args.num_prompts, _length_range(args.input_len)[0]), False
    output_len = _length_range(args.output_len)[0]
    report = asyncio.run(
        run(args.url, prompts, chat, output_len, args.request_rate, args.max_concurrency, args.max_duration,
            args.slo_ttft_ms, args.slo_tpot_ms, api_key=args.api_key)
    )  # fmt: skip
    paths = [] if args.no_save else write_outputs(report, Path(args.out_dir))
    print(json.dumps(vars(report), indent=2))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if report.completed else 1


def _eval(args: argparse.Namespace) -> int:
    import json

    if args.action == "score":
        from tokenmill.eval.judge import score_files

        if not (args.refs and args.preds):
            raise ValueError("eval score needs --refs and --preds")
        result = score_files(Path(args.refs), Path(args.preds))
        print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return 0
    from dataclasses import asdict

    from tokenmill.eval.datasets import load_items
    from tokenmill.eval.judge import evaluate, write_outputs

    if not args.data:
        raise ValueError("eval needs --data (a question file, .docx or .jsonl)")
    items = load_items(args.data)[: args.limit]
    report, per_item = evaluate(
        args.url, items, args.data, args.repeat, args.concurrency, args.threshold, args.health_timeout,
        args.predict_timeout,
    )  # fmt: skip
    paths = write_outputs(report, per_item, Path(args.out_dir))
    print(json.dumps(asdict(report), ensure_ascii=False, indent=2))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if report.passed else 1


def _tune(args: argparse.Namespace) -> int:
    import json

    from tokenmill.eval.datasets import load_items
    from tokenmill.eval.tune import tune

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
    best, _ = tune(
        items, space, args.model, args.device, args.port, Path(args.out_dir), args.threshold, args.margin,
        args.trials, args.time_budget,
    )  # fmt: skip
    print((Path(args.out_dir) / "trials.md").read_text())
    print((Path(args.out_dir) / "best.env").read_text())
    return 0 if best is not None and best.feasible else 1


def _download(args: argparse.Namespace) -> int:
    from tokenmill.models.download import download

    path = download(args.model_id, args.source, args.revision, args.dir, args.endpoint)
    print(f"{args.model_id}@{args.revision} is in {path} and loads")
    return 0


def _check_model(args: argparse.Namespace) -> int:
    from tokenmill.models.loader import check_model_directory

    problems = check_model_directory(args.directory)
    for problem in problems:
        print(f"tokenmill: {args.directory}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.directory} loads")
    return 1 if problems else 0


def _judge_sim(args: argparse.Namespace) -> int:
    import json

    from tokenmill.eval.datasets import load_items
    from tokenmill.eval.judge_sim import as_dict, simulate

    items = load_items(args.data)[: args.limit]
    overrides = {"TOKENMILL_MODEL": args.model} if args.model else {}
    if args.device:
        overrides["TOKENMILL_DEVICE"] = args.device
    settings = Path(args.env_file) if args.env_file else None
    log = Path(args.log) if args.log else None
    report = simulate(
        items, Path(args.dockerfile), settings, overrides, args.gpu_memory, args.threshold, args.health_limit,
        args.predict_limit, log,
    )  # fmt: skip
    print(json.dumps(as_dict(report), ensure_ascii=False, indent=2))
    print("PASS" if report.passed else f"FAIL: {report.failure}", file=sys.stderr)
    return 0 if report.passed else 1


def _length_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenmill", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="answer prompts with the engine and print the answers")
    generate.add_argument("prompt", nargs="+", help="one or more prompts")
    generate.add_argument("--raw", action="store_true", help="do not wrap prompts in the chat template")
    generate.add_argument("--max-tokens", type=int, default=256)
    generate.add_argument("--temperature", type=float, default=0.0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--sampling-seed", type=int, default=None)
    add_config_arguments(generate, EngineConfig, "engine")
    generate.set_defaults(handler=_generate)

    serve = commands.add_parser(
        "serve", help="serve the model over HTTP (judge contract, OpenAI API, FastDeploy, metrics, web chat)"
    )
    add_config_arguments(
        serve, ServerConfig, "server and engine (each also TOKENMILL_<NAME> in the environment)"
    )
    serve.set_defaults(handler=_serve)

    bench = commands.add_parser(
        "bench", help="offline throughput on a named workload (default), or `bench serve` against a server"
    )
    bench.add_argument("mode", nargs="?", choices=["offline", "serve"], default="offline")
    bench.add_argument(
        "--workload", choices=["qa-358", "judge-358", "nano-256", "single", "custom"], default="qa-358"
    )
    bench.add_argument("--num-prompts", type=int, default=100, help="custom workload: number of prompts")
    bench.add_argument("--input-len", default="128", help="custom workload: LEN or MIN:MAX prompt tokens")
    bench.add_argument("--output-len", default="128", help="custom workload: LEN or MIN:MAX output tokens")
    bench.add_argument(
        "--peer",
        action="append",
        choices=["hf", "hf-cb"],
        help="also time transformers: static batching (hf), continuous batching (hf-cb)",
    )
    bench.add_argument("--repeat", type=_positive_int, default=1, help="timed runs; reports their median")
    bench.add_argument(
        "--cold-start",
        action="store_true",
        help="no untimed pass first: the first timed run is the engine's first batch (shows compiles)",
    )
    bench.add_argument(
        "--data", default=None, help="questions of judge-358 (default data/official_test.txt) or bench serve"
    )
    bench.add_argument("--out-dir", default="bench/results", help="where the JSON result goes")
    bench.add_argument("--no-save", action="store_true", help="print only")
    online = bench.add_argument_group("bench serve")
    online.add_argument("--url", default="http://127.0.0.1:8000", help="the server (ours or vLLM)")
    online.add_argument("--request-rate", type=float, default=None, help="Poisson arrivals per second")
    online.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most")
    online.add_argument("--max-duration", type=float, default=600.0, help="seconds before giving up")
    online.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput: time-to-first-token bound")
    online.add_argument(
        "--slo-tpot-ms", type=float, default=None, help="goodput: time-per-output-token bound"
    )
    online.add_argument("--api-key", default=None)
    add_config_arguments(bench, EngineConfig, "engine")
    bench.set_defaults(handler=_bench)

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

    fetch = commands.add_parser("download", help="fetch a model at build time, pinned, and verify it loads")
    fetch.add_argument("model_id", help="e.g. Qwen/Qwen3-0.6B")
    fetch.add_argument("--source", choices=["modelscope", "huggingface"], default="modelscope")
    fetch.add_argument("--revision", default="master", help="branch, tag or commit to pin")
    fetch.add_argument("--dir", required=True, help="where the model goes (re-running resumes)")
    fetch.add_argument("--endpoint", default=None, help="the hub's address (a mirror); default: the source's")
    fetch.set_defaults(handler=_download)

    sim = commands.add_parser(
        "judge-sim", help="rehearse the judge's run: serve as the image would, then judge it"
    )
    sim.add_argument("--data", default="official_test.txt", help="the question file the judge would send")
    sim.add_argument("--limit", type=int, default=None, help="only the first N questions")
    sim.add_argument("--dockerfile", default="Dockerfile", help="whose ENV the server starts with")
    sim.add_argument("--env-file", default=None, help="settings on top (e.g. tune's best.env)")
    sim.add_argument("--model", default=None, help="a local model in place of the image's /app/model")
    sim.add_argument("--device", default=None)
    sim.add_argument("--gpu-memory", default=None, help="cap GPU memory, e.g. 32GiB to emulate an RTX 5090")
    sim.add_argument("--threshold", type=float, default=0.35)
    sim.add_argument("--health-limit", type=float, default=420.0, help="seconds the judge waits for GET /")
    sim.add_argument(
        "--predict-limit", type=float, default=360.0, help="seconds the judge waits for /predict"
    )
    sim.add_argument("--log", default=None, help="write the server's output here")
    sim.set_defaults(handler=_judge_sim)

    check = commands.add_parser(
        "check-model", help="verify that a model directory will load, without loading it"
    )
    check.add_argument("directory")
    check.set_defaults(handler=_check_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, TimeoutError) as exc:
        print(f"tokenmill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
