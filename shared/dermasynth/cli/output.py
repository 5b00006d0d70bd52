"""How commands print: tables for people (stdout), ``--json`` for scripts (stdout), messages on stderr."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON on stdout instead of a table")]


def to_jsonable(value: Any) -> Any:
    """Plain JSON data of a model, or of lists and dicts holding models."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    return value


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    typer.echo(json.dumps(to_jsonable(value), indent=2))


def print_table(table: Table) -> None:
    """A rich table on stdout."""
    Console().print(table)
