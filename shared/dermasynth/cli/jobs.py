"""``dermasynth jobs ...``: submit jobs to the gateway and follow them (status, list, cancel, logs, artefacts)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dermasynth.cli.output import JsonOption, print_json, print_table
from dermasynth.cli.remote import EXIT_FAILED, GatewayOption, KeyOption, console, gateway
from dermasynth.gateway_client import GatewayClient
from dermasynth.jobs.records import JobKind, JobRecord, JobState

app = typer.Typer(no_args_is_help=True)


def parse_params(params: str | None, assignments: list[str]) -> dict[str, Any]:
    """Job parameters from a JSON object (``'{...}'`` or ``@file.json``) and ``dotted.key=value`` overrides.

    Raises:
        typer.BadParameter: for JSON that is not an object or an assignment without ``=``.
    """
    text = params or "{}"
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"--params {params}: cannot read the file ({exc.strerror or exc})") from exc
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise typer.BadParameter(f"--params must be a JSON object, not {type(parsed).__name__}")
    for assignment in assignments:
        path, sep, raw = assignment.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"--set {assignment!r}: expected dotted.key=value, e.g. config.epochs=3")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = parsed
        *parents, leaf = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise typer.BadParameter(f"--set {assignment!r}: {part!r} is not an object")
        target[leaf] = value
    return parsed


def describe(record: JobRecord) -> str:
    """One line: state, phase, epoch/step and the latest metrics."""
    text = record.state.value
    progress = record.progress
    if progress is not None and not record.terminal:
        text += f" | {progress.phase}"
        if progress.epoch is not None:
            text += f" epoch {progress.epoch}" + (f"/{progress.total_epochs}" if progress.total_epochs else "")
        if progress.step is not None:
            text += f" step {progress.step}" + (f"/{progress.total_steps}" if progress.total_steps else "")
        if progress.eta_s is not None:
            text += f" eta {progress.eta_s:.0f}s"
    return text


def watch(client: GatewayClient, job_id: str, poll_s: float = 1.0) -> JobRecord:
    """Follow a job with a progress bar until it is final."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(job_id[:8], total=None)

        def update(record: JobRecord) -> None:
            progress = record.progress
            total = completed = None
            if progress is not None and progress.total_epochs and progress.epoch is not None:
                total, completed = float(progress.total_epochs), float(progress.epoch - 1)
                if progress.total_steps and progress.step is not None:
                    completed += progress.step / progress.total_steps
            elif progress is not None and progress.total_steps and progress.step is not None:
                total, completed = float(progress.total_steps), float(progress.step)
            bar.update(task, description=f"{job_id[:8]} {describe(record)}", total=total, completed=completed or 0)

        record = client.wait(job_id, poll_s=poll_s, on_update=update)
    return record


def _report(record: JobRecord) -> None:
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(record.state.value, "white")
    console.print(f"job {record.id}: [{colour}]{record.state.value}[/{colour}]")
    if record.error:
        console.print(f"error: {record.error}")


def finish(record: JobRecord) -> None:
    """Report a final job; exit 1 unless it succeeded."""
    _report(record)
    if record.state != JobState.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


def _show(record: JobRecord) -> None:
    """A job for people (stdout): state, what, where, when, progress, error and results."""
    lines = [f"job {record.id}: {record.state.value}"]
    if record.error:
        lines.append(f"error: {record.error}")
    lines += [f"kind {record.kind.value} on queue {record.queue}, attempts {record.attempts}"]
    times = [("created", record.created_at), ("started", record.started_at), ("finished", record.finished_at)]
    lines.append(", ".join(f"{name} {at.isoformat(timespec='seconds')}" for name, at in times if at is not None))
    if record.progress is not None and not record.terminal:
        lines.append(f"progress: {describe(record).partition(' | ')[2]}")
        if record.progress.metrics:
            lines.append("metrics so far: " + ", ".join(f"{k}={v}" for k, v in record.progress.metrics.items()))
    if record.cancel_requested and not record.terminal:
        lines.append("cancel requested")
    for name, value in record.result.items():
        lines.append(f"result {name}: {value}")
    for line in lines:
        typer.echo(line)


@app.command("submit")
def submit(
    kind: Annotated[JobKind, typer.Argument(help="what the job does")],
    params: Annotated[str | None, typer.Option(help="parameters as a JSON object, or @file.json")] = None,
    assign: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="override one parameter: dotted.key=value (value parsed as JSON when it can be); repeatable"
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it finishes")] = False,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Submit a job; prints its id (stdout). With --wait, follows it and exits 1 unless it succeeds.

    Example: dermasynth jobs submit training --set dataset_id=ds-123 --set config.epochs=3 --wait
    """
    body = parse_params(params, assign or [])
    with gateway(url, key) as client:
        record = client.submit(kind, body)
        console.print(f"queued {record.kind.value} job {record.id} on queue {record.queue}")
        typer.echo(record.id)
        if wait:
            record = watch(client, record.id)
    if wait:
        finish(record)


@app.command("status")
def status(
    job_id: str,
    follow: Annotated[bool, typer.Option("--watch", help="follow until final; exit 1 unless it succeeds")] = False,
    url: GatewayOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job's state, progress, error and results; --watch follows it with a progress bar."""
    with gateway(url, key) as client:
        record = watch(client, job_id) if follow else client.job(job_id)
    if as_json:
        print_json(record)
    else:
        _show(record)
    if follow and record.state != JobState.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


@app.command("list")
def list_(
    state: Annotated[JobState | None, typer.Option(help="only jobs in this state")] = None,
    kind: Annotated[JobKind | None, typer.Option(help="only jobs of this kind")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: GatewayOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Jobs, newest first."""
    with gateway(url, key) as client:
        page = client.jobs(state=state, kind=kind, limit=limit)
    if as_json:
        print_json(page)
        return
    table = Table(title=f"{len(page.jobs)} of {page.total} jobs")
    table.add_column("id", no_wrap=True, min_width=32)
    for column in ("kind", "state", "progress", "created", "error"):
        table.add_column(column)
    for record in page.jobs:
        table.add_row(
            record.id,
            record.kind.value,
            record.state.value,
            describe(record).partition(" | ")[2],
            record.created_at.isoformat(timespec="seconds"),
            (record.error or "")[:60],
        )
    print_table(table)


@app.command("cancel")
def cancel(job_id: str, url: GatewayOption = None, key: KeyOption = None) -> None:
    """Cancel a job (a running one stops at its next step and keeps its last checkpoint)."""
    with gateway(url, key) as client:
        record = client.cancel(job_id)
    console.print(f"job {job_id}: {record.state.value}" + (", cancel requested" if not record.terminal else ""))


@app.command("logs")
def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """A job's log lines (stdout)."""
    with gateway(url, key) as client:
        since = 0
        while True:
            page = client.logs(job_id, since)
            for line in page.lines:
                typer.echo(line)
            since = page.next
            if not follow or client.job(job_id).terminal:
                break
            time.sleep(1.0)


@app.command("artefacts")
def artefacts(job_id: str, url: GatewayOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A job's output files with their sizes."""
    with gateway(url, key) as client:
        files = client.artefacts(job_id)
    if as_json:
        print_json(files)
        return
    for item in files:
        typer.echo(f"{item.size:>12}  {item.path}")


@app.command("download")
def download(
    job_id: str,
    path: Annotated[str, typer.Argument(help="as listed by `jobs artefacts`")],
    out: Annotated[Path | None, typer.Option(help="file to write (default: the artefact's name)")] = None,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Download one output file of a job."""
    target = out or Path(Path(path).name)
    with gateway(url, key) as client:
        target.write_bytes(client.download(job_id, path))
    console.print(f"wrote {target}")
