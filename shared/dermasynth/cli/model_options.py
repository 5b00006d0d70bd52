"""Command-line options generated from a pydantic model's fields: one home for each default and its help.

``dermasynth train`` takes its training options from :class:`~dermasynth.classifier.config.TrainConfig`:
each field becomes ``--field-name`` with the field's default and description; a ``Literal`` becomes a
choice (an enum), a ``bool`` a ``--x/--no-x`` flag. The model still validates the values, so its
bounds and cross-field rules hold on the command line too.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel

_SCALARS = (bool, int, float, str)


def _choices(name: str, values: tuple[Any, ...]) -> type[StrEnum]:
    """An enum of a ``Literal``'s string values (typer shows and checks them as choices)."""
    title = "".join(part.title() for part in name.split("_"))
    return StrEnum(title, {str(v): str(v) for v in values})  # type: ignore[return-value]


def cli_type(name: str, annotation: Any) -> Any:
    """The type typer parses for a field annotated ``annotation``: scalars as they are, literals as enums.

    Raises:
        TypeError: for a type the command line cannot take (nested models, lists): exclude such fields.
    """
    origin = get_origin(annotation)
    if origin is Literal:
        return _choices(name, get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return cli_type(name, members[0]) | None
    if annotation in _SCALARS:
        return annotation
    raise TypeError(f"field {name!r} of type {annotation!r} has no command-line form; exclude it")


def model_options(
    model: type[BaseModel], *, exclude: Iterable[str] = (), panel: str | None = None
) -> list[inspect.Parameter]:
    """Keyword parameters (typer options) for the fields of ``model``, defaults and help from the fields."""
    skipped = set(exclude)
    parameters = []
    for name, field in model.model_fields.items():
        if name in skipped:
            continue
        kind = cli_type(name, field.annotation)
        flag = "--" + name.replace("_", "-")
        declaration = f"{flag}/--no-{name.replace('_', '-')}" if kind is bool else flag
        option = typer.Option(declaration, help=field.description or "", rich_help_panel=panel)
        default = field.get_default(call_default_factory=True)
        if isinstance(default, str) and isinstance(kind, type) and issubclass(kind, StrEnum):
            default = kind(default)
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])
        )
    return parameters


def plain(value: Any) -> Any:
    """An option's value as the model takes it (an enum member becomes its string)."""
    return value.value if isinstance(value, StrEnum) else value


def with_options(function: Callable[..., None], options: list[inspect.Parameter]) -> Callable[..., None]:
    """``function`` (which takes ``**options``) as typer sees it: its own parameters, then ``options``."""
    own = [p for p in inspect.signature(function, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    signature = inspect.Signature([*own, *options], return_annotation=None)
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()} | {"return": None}
    return function
