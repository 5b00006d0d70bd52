"""``dermasynth datasets ...``: datasets on the gateway (upload, register, list, show)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dermasynth.cli.output import JsonOption, print_json, print_table
from dermasynth.cli.remote import GatewayOption, KeyOption, console, gateway
from dermasynth.data.schemas import DatasetFormat, DatasetInfo

app = typer.Typer(no_args_is_help=True)

FormatOption = Annotated[DatasetFormat, typer.Option("--format", help="the layout (auto detects it)")]


@app.command("upload")
def upload(
    source: Annotated[Path, typer.Argument(exists=True, help="a dataset folder (zipped for you) or a .zip")],
    name: Annotated[str, typer.Option(help="a name for the dataset")],
    format: FormatOption = DatasetFormat.AUTO,
    seed: Annotated[int, typer.Option(min=0, help="seeds the lesion-grouped split")] = 0,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Upload a dataset; the gateway validates every image and prints the new dataset's id (stdout)."""
    with gateway(url, key) as client, console.status(f"uploading and validating {source}"):
        info, report = client.upload_dataset(source, name, fmt=format.value, seed=seed)
    console.print(
        f"{report.format}: {report.files_seen} files, {report.accepted} accepted, {report.rejected} "
        f"rejected {report.rejected_by_reason or ''}"
    )
    typer.echo(info.id)


@app.command("register")
def register(
    prefix: Annotated[str, typer.Argument(help="the store prefix holding the dataset")],
    name: Annotated[str, typer.Option(help="a name for the dataset")],
    format: FormatOption = DatasetFormat.AUTO,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Import a dataset that already lies in the object store; prints its id (stdout)."""
    with gateway(url, key) as client:
        info, report = client.register_dataset(prefix, name, format=format.value)
    console.print(f"{report.format}: {report.accepted} accepted, {report.rejected} rejected")
    typer.echo(info.id)


@app.command("list")
def list_(url: GatewayOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Datasets on the gateway, newest first."""
    with gateway(url, key) as client:
        infos = client.datasets()
    if as_json:
        print_json(infos)
        return
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
    print_table(table)


def _show(info: DatasetInfo) -> None:
    typer.echo(
        f"{info.id} {info.name!r}: {info.stats.images} images of {info.stats.lesions} lesions, "
        f"from {info.origin} ({info.format}), created {info.created_at.isoformat(timespec='seconds')}"
        + (f", made by job {info.job_id} from {info.parent_id}" if info.job_id else "")
    )
    splits = list(info.stats.splits)
    table = Table("class", *splits, "all")
    for label, total in info.stats.classes.items():
        table.add_row(label, *(str(info.stats.splits[s].get(label, 0)) for s in splits), str(total))
    print_table(table)
    if info.stats.sources:
        typer.echo("sources: " + ", ".join(f"{k} {v}" for k, v in info.stats.sources.items()))


@app.command("show")
def show(dataset_id: str, url: GatewayOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """One dataset with its class, split and source counts."""
    with gateway(url, key) as client:
        info = client.dataset(dataset_id)
    if as_json:
        print_json(info)
    else:
        _show(info)
