"""``dermasynth datasets ...``: datasets on the gateway (upload, register, list, show)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dermasynth.cli.jobs import finish, watch
from dermasynth.cli.output import JsonOption, print_json, print_table
from dermasynth.cli.remote import GatewayOption, KeyOption, console, gateway
from dermasynth.data.schemas import DatasetFormat, DatasetInfo
from dermasynth.gateway_client import GatewayClient
from dermasynth.jobs.records import JobRecord

app = typer.Typer(no_args_is_help=True)

FormatOption = Annotated[DatasetFormat, typer.Option("--format", help="the layout (auto detects it)")]


WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="follow the ingest job (default), or print its id and return")
]


def _follow(client: GatewayClient, job: JobRecord, wait: bool) -> None:
    """Print the ingest job's id (--no-wait), or follow it and print the dataset's report and id (stdout)."""
    console.print(f"ingest queued as job {job.id}")
    if not wait:
        typer.echo(job.id)
        return
    record = watch(client, job.id)
    finish(record)  # exit 1 unless it succeeded, with the job's error
    info, report = client.ingested(record)
    console.print(
        f"{report.format}: {report.files_seen} files, {report.accepted} accepted, {report.rejected} "
        f"rejected {report.rejected_by_reason or ''}"
    )
    typer.echo(info.id)


@app.command("upload")
def upload(
    source: Annotated[Path, typer.Argument(exists=True, help="a dataset folder (zipped for you) or a .zip")],
    name: Annotated[str, typer.Option(help="a name for the dataset")],
    format: FormatOption = DatasetFormat.AUTO,
    seed: Annotated[int, typer.Option(min=0, help="seeds the lesion-grouped split")] = 0,
    wait: WaitOption = True,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Upload a dataset; an ingest job validates every image. Follows the job and prints the new
    dataset's id (stdout; exit 1 if the import fails), or with --no-wait prints the job's id."""
    with gateway(url, key) as client:
        with console.status(f"uploading {source}"):
            job = client.start_upload(source, name, fmt=format.value, seed=seed)
        _follow(client, job, wait)


@app.command("register")
def register(
    prefix: Annotated[str, typer.Argument(help="the store prefix holding the dataset (under incoming/OWNER/)")],
    name: Annotated[str, typer.Option(help="a name for the dataset")],
    format: FormatOption = DatasetFormat.AUTO,
    wait: WaitOption = True,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Import a dataset that already lies in the object store (an ingest job); prints its id (stdout),
    or with --no-wait the job's id."""
    with gateway(url, key) as client:
        job = client.start_register(prefix, name, format=format.value)
        _follow(client, job, wait)


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
        + (f", made by job {info.job_id}" if info.job_id else "")
        + (f" from {info.parent_id}" if info.parent_id else "")
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
