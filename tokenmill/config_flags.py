"""Command-line flags derived from the configuration's field types, so the CLI never drifts from it.

Each field `foo_bar` becomes `--foo-bar`, parsed by its real type: `Literal[...]` gives choices, `bool`
gives `--foo-bar/--no-foo-bar`, `list[X]` a flag taking one or more values (and repeatable, as vLLM's
`--lora-modules a=x b=y`), `X | None` parses as `X`. A field whose type
has no command-line form fails at parser construction, not on a user's input.
"""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

ConfigT = TypeVar("ConfigT", bound=BaseModel)

_SCALAR_TYPES = (int, float, str, Path)


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type[BaseModel], title: str) -> None:
    """One --flag per field of `config_class`; unset flags stay None so environment variables can apply."""
    group = parser.add_argument_group(title)
    for name, field in config_class.model_fields.items():
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, dest=name, default=None, help=field.description, **flag_options(name, field))


def flag_options(name: str, field: FieldInfo) -> dict[str, Any]:
    """argparse options (type, choices, action) for one field, from its annotation."""
    annotation = _without_none(name, field.annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return {"choices": choices, "type": type(choices[0])}
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return {"action": "extend", "nargs": "+", "type": _scalar(name, item), "metavar": name.upper()}
    return {"type": _scalar(name, annotation)}


def given_arguments(args: argparse.Namespace, config_class: type[BaseModel]) -> dict[str, Any]:
    """The fields whose flags the user actually set."""
    return {
        name: getattr(args, name)
        for name in config_class.model_fields
        if getattr(args, name, None) is not None
    }


def config_from_arguments(args: argparse.Namespace, config_class: type[ConfigT]) -> ConfigT:
    return config_class(**given_arguments(args, config_class))


def _without_none(name: str, annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            raise TypeError(f"config field {name!r}: a union of {members} has no command-line form")
        return members[0]
    return annotation


def _scalar(name: str, annotation: Any) -> type:
    if annotation not in _SCALAR_TYPES:
        raise TypeError(f"config field {name!r}: type {annotation!r} has no command-line form")
    return annotation
