"""Command line: `python -m tokenmill <command>` (also the `tokenmill` console script)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tokenmill.config import EngineConfig, ServerConfig
from tokenmill.config_flags import add_config_arguments, config_from_arguments, given_arguments
from tokenmill.eval.commands import add_eval_commands
from tokenmill.eval.local_server import ServerDied
from tokenmill.sampling_params import SamplingParams


def _generate(args: argparse.Namespace) -> int:
    from tokenmill.engine.llm import LLM

    llm = LLM(**config_from_arguments(args, EngineConfig).model_dump())
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

    config = config_from_arguments(args, ServerConfig)
    logging.getLogger().setLevel(config.log_level.upper())
    return serve(config)


def _bench(args: argparse.Namespace) -> int:
    if args.mode == "serve":
        return _bench_serve(args)
    from tokenmill.bench.judge_workload import JudgeWorkload
    from tokenmill.bench.offline import benchmark
    from tokenmill.bench.workloads import WORKLOADS, Workload

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
    if args.num_loras:
        given.update(enable_lora=True, max_loras=args.num_loras, max_lora_rank=args.lora_rank)
    config = EngineConfig(**given)
    command = "python -m tokenmill " + " ".join(sys.argv[1:])
    result = benchmark(
        config, workload, args.peer or [], command, None if args.no_save else Path(args.out_dir),
        args.repeat, args.cold_start, args.num_loras, args.structured,
    )  # fmt: skip
    width = max(len(k) for k in vars(result))
    for key, value in vars(result).items():
        print(f"{key:<{width}}  {value}")
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from tokenmill.bench.serve import LoadSettings, random_prompts, run, write_outputs
    from tokenmill.eval.datasets import load_items

    if args.data:
        prompts, chat = [item.question for item in load_items(args.data)][: args.num_prompts], True
    else:
        prompts, chat = random_prompts(args.num_prompts, _length_range(args.input_len)[0]), False
    load = LoadSettings(
        url=args.url,
        chat=chat,
        max_tokens=_length_range(args.output_len)[0],
        request_rate=args.request_rate,
        max_concurrency=args.max_concurrency,
        max_duration=args.max_duration,
        slo_ttft_ms=args.slo_ttft_ms,
        slo_tpot_ms=args.slo_tpot_ms,
        api_key=args.api_key,
    )
    report = asyncio.run(run(prompts, load))
    paths = [] if args.no_save else write_outputs(report, Path(args.out_dir))
    print(json.dumps(vars(report), indent=2))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if report.completed else 1


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


def _merge_lora(args: argparse.Namespace) -> int:
    from tokenmill.lora.merge import merge_lora

    out = merge_lora(args.base, args.adapter, args.out)
    print(f"wrote {out}")
    return 0


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
        "--workload",
        choices=["qa-358", "judge-358", "nano-256", "single", "batch-8", "copy", "custom"],
        default="qa-358",
        help="copy: one stream whose answer repeats a paragraph of its prompt (speculative decoding)",
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
    bench.add_argument(
        "--num-loras", type=int, default=0, help="spread the requests over this many random LoRA adapters"
    )
    bench.add_argument("--lora-rank", type=_positive_int, default=16, help="rank of the --num-loras adapters")
    bench.add_argument("--out-dir", default="bench/results", help="where the JSON result goes")
    bench.add_argument(
        "--structured",
        choices=["json"],
        default=None,
        help="offline: every request under a JSON schema (compare with the same run without it)",
    )
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

    fetch = commands.add_parser("download", help="fetch a model at build time, pinned, and verify it loads")
    fetch.add_argument("model_id", help="e.g. Qwen/Qwen3-0.6B")
    fetch.add_argument("--source", choices=["modelscope", "huggingface"], default="modelscope")
    fetch.add_argument("--revision", default="master", help="branch, tag or commit to pin")
    fetch.add_argument("--dir", required=True, help="where the model goes (re-running resumes)")
    fetch.add_argument("--endpoint", default=None, help="the hub's address (a mirror); default: the source's")
    fetch.set_defaults(handler=_download)

    add_eval_commands(commands)

    check = commands.add_parser(
        "check-model", help="verify that a model directory will load, without loading it"
    )
    check.add_argument("directory")
    check.set_defaults(handler=_check_model)

    merge = commands.add_parser("merge-lora", help="write a checkpoint with a PEFT LoRA adapter merged in")
    merge.add_argument("base", help="the base model's directory (safetensors)")
    merge.add_argument("adapter", help="the PEFT adapter directory")
    merge.add_argument("out", help="the merged checkpoint's directory (new or empty)")
    merge.set_defaults(handler=_merge_lora)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, TimeoutError, ServerDied) as exc:
        print(f"tokenmill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
