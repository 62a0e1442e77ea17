"""`python -m tokenmill generate` as a user runs it: a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from typing import Literal, Union, get_args, get_origin

import pytest

from tokenmill.cli import build_parser
from tokenmill.config import EngineConfig, ServerConfig
from tokenmill.config_env import SEED_ENV_ALIASES
from tokenmill.config_flags import config_from_arguments


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_generate_prints_an_answer_from_the_default_model() -> None:
    result = run("generate", "--device", "cpu", "--max-tokens", "24", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "tok/s" in result.stderr


@pytest.mark.slow
def test_generate_on_a_directory_with_engine_flags(tiny_model_dir) -> None:
    result = run(
        "generate",
        "--model",
        str(tiny_model_dir("qwen3")),
        "--device",
        "cpu",
        "--raw",
        "--block-size",
        "4",
        "--no-enable-prefix-caching",
        "--max-tokens",
        "5",
        "hello",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[[1-5] tokens in", result.stderr)


@pytest.mark.slow
def test_bad_arguments_fail_clearly(tmp_path) -> None:
    result = run("generate", "--max-num-seqs", "0", "x")
    assert result.returncode == 2 and "max_num_seqs" in result.stderr
    result = run("generate", "--model", str(tmp_path / "nowhere"), "x")
    assert result.returncode == 2 and "neither a directory" in result.stderr
    result = run("generate", "--dtype", "int3", "x")
    assert result.returncode == 2 and "--dtype" in result.stderr


def test_readme_documents_every_server_setting() -> None:
    from pathlib import Path

    from tokenmill.config import EngineConfig, ServerConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ServerConfig.model_fields:
        documented = f"`--{name.replace('_', '-')}`" in readme or f"`{name}`" in readme
        assert documented, f"README does not document the setting {name}"
    for name in EngineConfig.model_fields:
        assert f"`{name}`" in readme, name


# A non-default value for the fields whose valid values cannot be read off their type.
SPECIAL_SAMPLES = {
    "model": "random:qwen3-tiny",
    "max_gpu_memory": "32GiB",
    "host": "127.0.0.1",
    "warmup_file": "data/official_test.txt",
    "lora_modules": ["ft=/adapters/ft"],
    "speculative_model": "random:qwen3-tiny",
}

# Settings valid only beside another: the round trip sets that one too.
COMPANIONS = {"speculative_model": {"speculative_method": "draft"}}


def _without_none(annotation):
    members = [m for m in get_args(annotation) if m is not type(None)]
    return members[0] if get_origin(annotation) in (Union, types.UnionType) else annotation


def _sample(config_class, name: str):
    """A valid value for field `name` that differs from its default."""
    field = config_class.model_fields[name]
    if name in SPECIAL_SAMPLES:
        return SPECIAL_SAMPLES[name]
    annotation = _without_none(field.annotation)
    default = field.get_default(call_default_factory=True)
    if annotation is bool:
        return not default
    if get_origin(annotation) is Literal:
        return next(choice for choice in get_args(annotation) if choice != default)
    candidates = {
        int: [7, 3, 2048, 65536, 9001],
        float: [0.5, 0.25, 12.5],
        str: ["some text, with spaces"],
    }.get(annotation) or {list: [["one", "two words"]]}[get_origin(annotation)]
    probe = config_class()
    for candidate in candidates:
        try:
            setattr(probe, name, candidate)  # validate_assignment: the field's own bounds
        except ValueError:
            continue
        if candidate != default:
            return candidate
    raise AssertionError(f"no sample value for {name}")


def _flags(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, list):
        return [part for item in value for part in (flag, str(item))]
    return [flag, str(value)]


def _parsed(command: str, *argv: str):
    # the prompt first: a list flag (--lora-modules a=x b=y) takes every value after it, as in vLLM
    args = build_parser().parse_args([command, *(["x"] if command == "generate" else []), *argv])
    return config_from_arguments(args, ServerConfig if command == "serve" else EngineConfig)


@pytest.mark.parametrize("name", list(ServerConfig.model_fields))
def test_every_server_flag_round_trips(name: str, monkeypatch) -> None:
    for variable in list(os.environ):
        if variable.startswith("TOKENMILL_") or variable in SEED_ENV_ALIASES:
            monkeypatch.delenv(variable)
    value = _sample(ServerConfig, name)
    companions = COMPANIONS.get(name, {})
    extra = [flag for key, other in companions.items() for flag in _flags(key, other)]
    config = _parsed("serve", *_flags(name, value), *extra)
    assert getattr(config, name) == value
    assert type(getattr(config, name)) is type(value)
    untouched, changed = ServerConfig(), {name, *companions}
    assert {k: v for k, v in config if k not in changed} == {k: v for k, v in untouched if k not in changed}


@pytest.mark.parametrize("command", ["generate", "bench"])
@pytest.mark.parametrize("name", list(EngineConfig.model_fields))
def test_every_engine_flag_round_trips(command: str, name: str) -> None:
    value = _sample(EngineConfig, name)
    extra = [flag for key, other in COMPANIONS.get(name, {}).items() for flag in _flags(key, other)]
    assert getattr(_parsed(command, *_flags(name, value), *extra), name) == value


@pytest.mark.parametrize("command", ["generate", "bench", "serve"])
def test_dtype_float32_is_accepted(command: str) -> None:
    assert _parsed(command, "--dtype", "float32").dtype == "float32"


def test_unset_flags_leave_the_environment_in_charge(monkeypatch) -> None:
    monkeypatch.setenv("TOKENMILL_MAX_NUM_SEQS", "5")
    assert _parsed("serve").max_num_seqs == 5
    assert _parsed("serve", "--max-num-seqs", "9").max_num_seqs == 9


def test_wrong_flag_values_are_refused_by_argparse(capsys) -> None:
    for argv in (["--dtype", "float64"], ["--max-num-seqs", "many"], ["--gpu-memory-utilization", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *argv])
        assert argv[0] in capsys.readouterr().err


def test_a_field_type_without_a_command_line_form_fails_when_the_parser_is_built() -> None:
    import argparse

    from pydantic import BaseModel

    from tokenmill.config_flags import add_config_arguments

    class Odd(BaseModel):
        weights: dict[str, int] = {}

    with pytest.raises(TypeError, match="'weights'"):
        add_config_arguments(argparse.ArgumentParser(), Odd, "odd")


def test_lora_modules_take_vllms_forms(monkeypatch) -> None:
    """Several name=path after one flag (vLLM's nargs), the flag repeated, and the JSON object form."""
    model_json = '{"name": "c", "path": "/adapters/c", "base_model_name": "qwen3"}'
    config = _parsed(
        "serve", "--lora-modules", "a=/adapters/a", "b=/adapters/b", "--lora-modules", model_json
    )
    assert config.lora_module_paths() == {"a": "/adapters/a", "b": "/adapters/b", "c": "/adapters/c"}
    assert [m.base_model_name for m in config.lora_module_specs()] == [None, None, "qwen3"]
    assert _parsed("generate", "--lora-modules", "a=/x").lora_module_paths() == {"a": "/x"}


def test_lora_modules_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TOKENMILL_LORA_MODULES", "a=/adapters/a  b=/adapters/b")
    assert ServerConfig().lora_module_paths() == {"a": "/adapters/a", "b": "/adapters/b"}
    monkeypatch.setenv("TOKENMILL_LORA_MODULES", '[{"name": "a", "path": "/x"}, "b=/y"]')
    assert ServerConfig().lora_module_paths() == {"a": "/x", "b": "/y"}
    monkeypatch.setenv("TOKENMILL_LORA_MODULES", '{"name": "a", "path": "/x", "base_model_name": "m"}')
    assert ServerConfig().lora_module_specs()[0].base_model_name == "m"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["noequals"], "name=path or a JSON object"),
        (['{"name": "a"}'], "path"),
        (['{"name": "a", "path": "/x", "rank": 8}'], "rank"),
        (["{not json"], "a JSON item does not parse"),
    ],
)
def test_malformed_lora_modules_name_the_field(value: list[str], message: str) -> None:
    with pytest.raises(ValueError, match="lora_modules") as error:
        EngineConfig(lora_modules=value)
    assert message in str(error.value)
