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
    from tokenmill.bench.offline import WORKLOADS, Workload, benchmark

    if args.workload == "custom":
        workload = Workload(
            "custom", args.num_prompts, _length_range(args.input_len), _length_range(args.output_len)
        )
    else:
        workload = WORKLOADS[args.workload]
    given = given_arguments(args, EngineConfig)
    given.setdefault("max_num_seqs", max(workload.num_prompts, 1))  # the whole workload in one batch
    config = EngineConfig(**given)
    command = "python -m tokenmill " + " ".join(sys.argv[1:])
    result = benchmark(
        config, workload, args.peer or [], command, None if args.no_save else Path(args.out_dir)
    )
    width = max(len(k) for k in vars(result))
    for key, value in vars(result).items():
        print(f"{key:<{width}}  {value}")
    return 0


def _length_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


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
        "bench", help="offline throughput on a named workload, against the bytes floor"
    )
    bench.add_argument("--workload", choices=["qa-358", "nano-256", "single", "custom"], default="qa-358")
    bench.add_argument("--num-prompts", type=int, default=100, help="custom workload: number of prompts")
    bench.add_argument("--input-len", default="128", help="custom workload: LEN or MIN:MAX prompt tokens")
    bench.add_argument("--output-len", default="128", help="custom workload: LEN or MIN:MAX output tokens")
    bench.add_argument(
        "--peer",
        action="append",
        choices=["hf", "hf-cb"],
        help="also time transformers: static batching (hf), continuous batching (hf-cb)",
    )
    bench.add_argument("--out-dir", default="bench/results", help="where the JSON result goes")
    bench.add_argument("--no-save", action="store_true", help="print only")
    add_config_arguments(bench, EngineConfig, "engine")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"tokenmill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
