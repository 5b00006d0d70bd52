"""``dermasynth evaluate``: a run's model on one split of real images; metrics, CIs and figures."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from dermasynth.classifier.evaluate import EvaluationReport, evaluate_run
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.storage import FilesystemStore, ObjectNotFound

console = Console(stderr=True)


def _table(report: EvaluationReport) -> Table:
    table = Table(title=f"{report.model} on {report.split} ({report.n} images, epoch {report.epoch})")
    for column in ("class", "precision", "recall (95% CI)", "F1", "AUC", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, m in report.per_class.items():
        ci = f" [{m.recall_ci.low:.2f}, {m.recall_ci.high:.2f}]" if m.recall_ci else ""
        table.add_row(
            name,
            f"{m.precision:.3f}",
            f"{m.recall:.3f}{ci}",
            f"{m.f1:.3f}",
            "-" if m.auc is None else f"{m.auc:.3f}",
            str(m.support),
        )
    return table


def _with_ci(report: EvaluationReport, name: str) -> str:
    value = getattr(report, name)
    if value is None:
        return "-"
    ci = report.ci.get(name)
    return f"{value:.4f}" + (f" [{ci.low:.4f}, {ci.high:.4f}]" if ci else "")


class Split(StrEnum):
    """The splits a run is evaluated on."""

    TEST = "test"
    VAL = "val"
    TRAIN = "train"


class Checkpoint(StrEnum):
    """Which checkpoint of a run."""

    BEST = "best"
    LATEST = "latest"


def evaluate(
    run: Annotated[Path, typer.Option("--run", help="run folder written by `dermasynth train`")],
    data: Annotated[Path, typer.Option("--data", help="dataset folder holding manifest.csv")],
    split: Annotated[Split, typer.Option(help="the split (synthetic rows are never evaluated)")] = Split.TEST,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    tta: Annotated[bool, typer.Option(help="average over flips and right-angle rotations")] = False,
    bootstrap: Annotated[int, typer.Option(min=0, help="resamples for 95% intervals (0: none)")] = 1000,
    seed: Annotated[int, typer.Option(help="seeds the bootstrap")] = 0,
    checkpoint: Annotated[Checkpoint, typer.Option(help="which checkpoint of the run")] = Checkpoint.BEST,
    prefix: Annotated[str, typer.Option(help="folder inside --run for metrics.json and the figures")] = "",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
) -> None:
    """Evaluate a run on real images: accuracy, balanced accuracy, macro-F1, per class, confusion matrix, AUC."""
    if not run.is_dir():
        console.print(f"[red]no run folder at {run}[/red]")
        raise typer.Exit(2)
    try:
        manifest = Manifest.read(data)
        report = evaluate_run(
            FilesystemStore(run),
            manifest,
            split.value,
            tta=tta,
            bootstrap=bootstrap,
            seed=seed,
            which=cast(Literal["best", "latest"], checkpoint.value),
            prefix=prefix,
            device=device,
            batch_size=batch_size,
        )
    except ObjectNotFound as exc:
        console.print(
            f"[red]{run} holds no {checkpoint.value} checkpoint[/red] ({exc}); train it with `dermasynth train`"
        )
        raise typer.Exit(2) from exc
    except (ManifestError, ValueError, RuntimeError) as exc:
        console.print(f"[red]evaluation failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    if json_output:
        typer.echo(report.model_dump_json())
        return
    console.print(_table(report))
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "auc"):
        console.print(f"{name:>18}: {_with_ci(report, name)}")
    where = run / prefix if prefix else run
    console.print(f"wrote metrics.json, confusion_matrix.png and per_class.png to {where}")
