"""``dermasynth datasets ...``: datasets on the gateway (upload, register, list, show)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dermasynth.cli.remote import GatewayOption, KeyOption, console, gateway
from dermasynth.data.formats import FORMATS

app = typer.Typer(help="Datasets on the gateway: upload, register, list, show.", no_args_is_help=True)


@app.command("upload")
def upload(
    source: Annotated[Path, typer.Argument(exists=True, help="a dataset folder (zipped for you) or a .zip")],
    name: Annotated[str, typer.Option(help="a name for the dataset")],
    format: Annotated[str, typer.Option("--format", help=f"one of {', '.join(FORMATS)}")] = "auto",
    seed: Annotated[int, typer.Option(min=0, help="seeds the lesion-grouped split")] = 0,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Upload a dataset; the gateway validates every image and prints the new dataset's id (stdout)."""
    with gateway(url, key) as client, console.status(f"uploading and validating {source}"):
        info, report = client.upload_dataset(source, name, fmt=format, seed=seed)
    console.print(
        f"{report.format}: {report.files_seen} files, {report.accepted} accepted, {report.rejected} "
        f"rejected {report.rejected_by_reason or ''}"
    )
    typer.echo(info.id)


@app.command("register")
def register(
    prefix: Annotated[str, typer.Argument(help="the store prefix holding the dataset")],
    name: Annotated[str, typer.Option(help="a name for the dataset")],
    format: Annotated[str, typer.Option("--format", help=f"one of {', '.join(FORMATS)}")] = "auto",
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Import a dataset that already lies in the object store; prints its id (stdout)."""
    with gateway(url, key) as client:
        info, report = client.register_dataset(prefix, name, format=format)
    console.print(f"{report.format}: {report.accepted} accepted, {report.rejected} rejected")
    typer.echo(info.id)


@app.command("list")
def list_(url: GatewayOption = None, key: KeyOption = None) -> None:
    """Datasets on the gateway, newest first."""
    with gateway(url, key) as client:
        infos = client.datasets()
    table = Table(title=f"{len(infos)} datasets")
    table.add_column("id", no_wrap=True, min_width=15)
    for column in ("name", "origin", "images", "classes", "created"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.id,
            info.name,
            info.origin,
            str(info.stats.images),
            " ".join(f"{c}:{n}" for c, n in info.stats.classes.items()),
            info.created_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@app.command("show")
def show(dataset_id: str, url: GatewayOption = None, key: KeyOption = None) -> None:
    """One dataset with its class, split and source counts (JSON)."""
    with gateway(url, key) as client:
        typer.echo(json.dumps(client.dataset(dataset_id).model_dump(mode="json"), indent=2))
