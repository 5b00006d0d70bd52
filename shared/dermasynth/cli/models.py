"""``dermasynth models ...``: served models through the gateway (an engineer's API key is all it takes).

List models and their versions with lineage, export a succeeded training job as a new version, make a
version live and roll back. The gateway does the work (``/v1/models``); this module imports no torch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from dermasynth.cli.jobs import finish, watch
from dermasynth.cli.output import JsonOption, print_json, print_table
from dermasynth.cli.remote import GatewayOption, KeyOption, console, gateway
from dermasynth.gateway_client import GatewayClient, GatewayError
from dermasynth.jobs.records import JobRecord
from dermasynth.serving.schemas import LiveModel, ModelVersionInfo

app = typer.Typer(no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(help="the served model's name")]


class Checkpoint(StrEnum):
    """Which checkpoint of a training run to export."""

    BEST = "best"
    LATEST = "latest"


class InstanceKind(StrEnum):
    """Where Triton runs a model's instances."""

    CPU = "cpu"
    GPU = "gpu"


def _print_live(live: LiveModel) -> None:
    console.print(f"{live.name}: version {live.version} is live")


def _version_rows(table: Table, versions: list[ModelVersionInfo]) -> None:
    for v in versions:
        shown = [(k, val) for k, val in sorted(v.lineage.metrics.items()) if "accuracy" in k or "f1" in k]
        table.add_row(
            v.name,
            str(v.version),
            "yes" if v.live else "",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.architecture,
            str(v.image_size),
            v.lineage.job_id or v.lineage.run or "",
            v.lineage.dataset or "",
            ", ".join(f"{k}={val:.3f}" for k, val in shown),
        )


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="one model; all when left out")] = None,
    url: GatewayOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Models, their versions with lineage (training job or run, dataset, metrics), and which one is live."""
    with gateway(url, key) as client:
        names = [name] if name else [live.name for live in client.models()]
        versions = [v for model in names for v in client.model(model).versions]
    if as_json:
        print_json(versions)
        return
    table = Table("model", "version", "live", "created", "architecture", "size", "job or run", "dataset", "metrics")
    _version_rows(table, versions)
    print_table(table)


@app.command("show")
def show(
    name: NameArgument,
    version: Annotated[
        int | None, typer.Argument(min=1, help="one version; the live one and history if left out")
    ] = None,
    url: GatewayOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A model's live version with its deploy history, or one version with its classes and thresholds."""
    with gateway(url, key) as client:
        shown: Any = client.model_version(name, version) if version else client.model(name)
    if as_json:
        print_json(shown)
        return
    if isinstance(shown, ModelVersionInfo):
        calibrated = ""
        if shown.set_coverage is not None:
            calibrated = f"; {shown.set_coverage:.0%} prediction sets, temperature {shown.temperature:.2f}"
            if shown.malignant_threshold is not None:
                calibrated += f", malignant at P >= {shown.malignant_threshold:.3f}"
        floor = f"below p={shown.min_probability} or " if shown.min_probability > 0 else ""
        typer.echo(
            f"{shown.name} version {shown.version}{' (live)' if shown.live else ''}: {shown.architecture} at "
            f"{shown.image_size} px, classes {', '.join(shown.classes)}; abstains {floor}above OOD score "
            f"{shown.ood_threshold:.1f}{calibrated}"
        )
        lineage = shown.lineage
        typer.echo(f"from job {lineage.job_id or '-'} (run {lineage.run or '-'}) on dataset {lineage.dataset or '-'}")
        for metric, value in sorted(lineage.metrics.items()):
            typer.echo(f"  {metric} = {value:.4f}")
        return
    typer.echo(f"{name}: version {shown.live.version if shown.live.version is not None else 'none'} is live")
    for change in shown.live.history:
        before = f" (was {change.previous})" if change.previous is not None else ""
        typer.echo(f"  {change.at.isoformat(timespec='seconds')} {change.action} {change.version}{before}")
    table = Table("model", "version", "live", "created", "architecture", "size", "job or run", "dataset", "metrics")
    _version_rows(table, shown.versions)
    print_table(table)


def _exported_version(client: GatewayClient, name: str, training_job_id: str, job: JobRecord) -> ModelVersionInfo:
    """The version an export job registered: the one its result names, else the newest from that training job."""
    versions = client.model(name).versions
    named = job.result.get("version")
    chosen = [v for v in versions if v.version == named] if named is not None else []
    chosen = chosen or [v for v in versions if v.lineage.job_id == training_job_id]
    if not chosen:
        raise GatewayError(200, "bad_answer", f"export job {job.id} succeeded but {name} has no version from it")
    return max(chosen, key=lambda v: v.version)


@app.command("export")
def export(
    training_job_id: Annotated[str, typer.Argument(help="a succeeded training job (`dermasynth jobs list`)")],
    name: Annotated[str, typer.Option("--name", help="the served model's name")] = "classifier",
    which: Annotated[Checkpoint | None, typer.Option(help="which checkpoint of the run [default: best]")] = None,
    min_probability: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="abstain below this top probability (0: off, the sets decide) [default: the gateway's]",
        ),
    ] = None,
    ood_quantile: Annotated[
        float | None,
        typer.Option(min=0.5, max=1.0, help="validation quantile of the OOD threshold [default: the gateway's]"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="when the gateway queues the export as a job: follow it")
    ] = True,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Export a training job's model as a new version (parity-checked); prints the version (stdout).

    The new version is not live until `dermasynth models deploy NAME VERSION`. When the gateway runs the
    export as a job, this follows it (exit 1 if it fails), or with --no-wait prints the job's id.
    """
    with gateway(url, key) as client:
        exported = client.export_model(
            training_job_id,
            name=name,
            which=which.value if which else None,
            min_probability=min_probability,
            ood_quantile=ood_quantile,
        )
        if isinstance(exported, JobRecord):
            console.print(f"export queued as job {exported.id}")
            if not wait:
                typer.echo(exported.id)
                return
            job = watch(client, exported.id)
            finish(job)  # exit 1 unless it succeeded
            exported = _exported_version(client, name, training_job_id, job)
    console.print(
        f"{name} version {exported.version}: OOD threshold {exported.ood_threshold:.1f}; not live until "
        f"`dermasynth models deploy {name} {exported.version}`"
    )
    typer.echo(exported.version)


@app.command("deploy")
def deploy(
    name: NameArgument,
    version: Annotated[int, typer.Argument(min=1, help="the version to make live")],
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Triton's largest batch")] = None,
    queue_delay_us: Annotated[int | None, typer.Option(min=0, help="dynamic batching queue delay")] = None,
    instances: Annotated[int | None, typer.Option(min=1, help="model instances")] = None,
    threads: Annotated[int | None, typer.Option(min=0, help="intra-op threads per instance (0: default)")] = None,
    instance_kind: Annotated[InstanceKind | None, typer.Option(help="run the instances on CPU or GPU")] = None,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Make a version live; the previous one serves until the new one is ready.

    Batching options not given stay those of the last deploy.
    """
    changes = {
        "max_batch_size": max_batch_size,
        "max_queue_delay_us": queue_delay_us,
        "instance_count": instances,
        "intra_op_threads": threads,
        "instance_kind": instance_kind.value if instance_kind else None,
    }
    batching = {k: v for k, v in changes.items() if v is not None}
    with gateway(url, key) as client:
        _print_live(client.deploy(name, version, batching or None))


@app.command("rollback")
def rollback(
    name: NameArgument,
    to: Annotated[int | None, typer.Option("--to", min=1, help="a version; default: the one live before")] = None,
    url: GatewayOption = None,
    key: KeyOption = None,
) -> None:
    """Make the previously live version (or --to VERSION) live again."""
    with gateway(url, key) as client:
        _print_live(client.rollback(name, to))
