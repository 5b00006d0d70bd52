"""``dermasynth models ...``: export trained runs for serving, list versions, deploy and roll back.

Works on the object store the settings name (``DERMASYNTH_STORE``...) and the Triton at
``DERMASYNTH_TRITON_URL``; the gateway's ``/v1/models`` does the same over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dermasynth.config import get_settings
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.serving.export import ExportError
from dermasynth.serving.inference_client import InferenceUnavailable, TritonClient
from dermasynth.serving.model_repository import BatchingOptions
from dermasynth.serving.registry import Deployer, DeploymentError, ModelRegistry, UnknownModel
from dermasynth.serving.schemas import LiveModel, ModelLineage
from dermasynth.storage import FilesystemStore, ObjectNotFound, open_store

app = typer.Typer(
    help="Export trained runs for serving; list, deploy and roll back model versions.", no_args_is_help=True
)
console = Console(stderr=True)
T = TypeVar("T")

NameOption = Annotated[str, typer.Option("--name", help="the served model's name")]


def _registry() -> ModelRegistry:
    return ModelRegistry(open_store(get_settings()))


def _with_triton(use: Callable[[Deployer], Awaitable[T]]) -> T:
    settings = get_settings()

    async def go() -> T:
        client = TritonClient(
            settings.triton_url,
            timeout_s=settings.triton_timeout_s,
            admin_key=settings.triton_admin_key.get_secret_value() if settings.triton_admin_key else None,
        )
        try:
            return await use(Deployer(_registry(), client, settle_s=settings.deploy_settle_s))
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except (UnknownModel, DeploymentError, InferenceUnavailable) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def _print_live(live: LiveModel) -> None:
    console.print(f"{live.name}: version {live.version} is live")


@app.command("export")
def export(
    run: Annotated[Path, typer.Option("--run", help="run folder written by `dermasynth train` (best.pth ...)")],
    data: Annotated[Path, typer.Option("--data", help="the dataset folder it was trained on (manifest.csv)")],
    name: NameOption = "classifier",
    which: Annotated[str, typer.Option(help="best or latest checkpoint")] = "best",
    min_probability: Annotated[float, typer.Option(min=0.0, max=1.0, help="abstain below this top probability")] = 0.5,
    ood_quantile: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="validation quantile of the OOD threshold")
    ] = 0.95,
) -> None:
    """Export a trained run (TorchScript + contract, parity-checked) as a new version; deploy it separately."""
    from dermasynth.classifier.checkpoint import load_trained
    from dermasynth.serving.export import export_trained

    if which not in ("best", "latest"):
        raise typer.BadParameter(f"--which {which!r}: use best or latest")
    checkpoint: Literal["best", "latest"] = "best" if which == "best" else "latest"
    try:
        manifest = Manifest.read(data)
        trained = load_trained(FilesystemStore(run), checkpoint)
    except (ManifestError, FileNotFoundError, ObjectNotFound, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(
        f"exporting {trained.config.model} ({len(trained.classes)} classes, "
        f"{trained.preprocessing.image_size} px) from {run}"
    )
    try:
        exported = export_trained(trained, manifest, min_probability=min_probability, ood_quantile=ood_quantile)
    except (ExportError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    metrics = {k: float(v) for k, v in trained.metrics.items() if isinstance(v, int | float)}
    info = _registry().register(
        name, exported, ModelLineage(run=str(run.resolve()), dataset=str(data.resolve()), metrics=metrics)
    )
    parity = exported.contract.parity
    console.print(
        f"{name} version {info.version}: parity max |dp| {parity.max_abs_probability_diff:.1e} on "
        f"{parity.images} images; OOD threshold {info.ood_threshold:.1f}; not live until "
        f"`dermasynth models deploy {name} {info.version}`"
    )
    typer.echo(info.version)


@app.command("list")
def list_(name: Annotated[str | None, typer.Argument(help="one model; all when left out")] = None) -> None:
    """Models, their versions with lineage, and which version is live."""
    registry = _registry()
    table = Table("model", "version", "live", "created", "architecture", "size", "run", "dataset", "metrics")
    for model in [name] if name else registry.names():
        for v in registry.versions(model):
            shown = [(k, val) for k, val in sorted(v.lineage.metrics.items()) if "accuracy" in k or "f1" in k]
            metrics = ", ".join(f"{k}={val:.3f}" for k, val in shown)
            table.add_row(
                model,
                str(v.version),
                "yes" if v.live else "",
                v.created_at.strftime("%Y-%m-%d %H:%M"),
                v.architecture,
                str(v.image_size),
                v.lineage.run or "",
                v.lineage.dataset or "",
                metrics,
            )
    Console().print(table)


@app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="the served model")],
    version: Annotated[int, typer.Argument(min=1, help="the version to make live")],
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Triton's largest batch")] = None,
    queue_delay_us: Annotated[int | None, typer.Option(min=0, help="dynamic batching queue delay")] = None,
    instances: Annotated[int | None, typer.Option(min=1, help="model instances")] = None,
    threads: Annotated[int | None, typer.Option(min=0, help="torch intra-op threads per instance")] = None,
    gpu: Annotated[bool | None, typer.Option(help="run the instances on the GPU")] = None,
) -> None:
    """Make a version live on Triton; the previous one serves until the new one is ready."""
    current = _registry().serving_options(name)
    changes: dict[str, object] = {
        "max_queue_delay_us": queue_delay_us,
        "instance_count": instances,
        "intra_op_threads": threads,
        "instance_kind": None if gpu is None else ("gpu" if gpu else "cpu"),
    }
    if max_batch_size is not None:
        changes["max_batch_size"] = max_batch_size
        changes["preferred_batch_sizes"] = tuple(s for s in current.preferred_batch_sizes if s <= max_batch_size)
    update = {k: v for k, v in changes.items() if v is not None}
    try:
        options = BatchingOptions.model_validate({**current.model_dump(), **update})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _print_live(_with_triton(lambda d: d.deploy(name, version, options)))


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="the served model")],
    to: Annotated[int | None, typer.Option("--to", min=1, help="a version; default: the one live before")] = None,
) -> None:
    """Make the previously live version (or --to VERSION) live again."""
    _print_live(_with_triton(lambda d: d.rollback(name, to)))
