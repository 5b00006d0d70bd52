"""``dermasynth evaluate``: a run's model on one split of real images; metrics, CIs, figures, and how far
its served predictions can be trusted (calibration, malignant operating point, selective accuracy,
conformal sets; :mod:`dermasynth.serving.trust`)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.classifier.evaluate import EvaluationReport, evaluate_run, load_predictions
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
    trust: Annotated[
        bool, typer.Option(help="calibrate on val and report ECE, Brier, malignant, selective, conformal")
    ] = True,
    coverage: Annotated[float, typer.Option(min=0.5, max=0.99, help="target coverage of the prediction sets")] = 0.9,
    malignant_sensitivity: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="malignant sensitivity the operating point reaches on val")
    ] = 0.85,
) -> None:
    """Evaluate a run on real images: accuracy, balanced accuracy, macro-F1, per class, confusion matrix, AUC;
    then ECE and Brier before/after calibration (reliability.png), malignant sensitivity/specificity at the
    served rule, selective accuracy and conformal coverage, with the serving calibration fitted on val."""
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
            save_predictions=trust,
        )
        extra = (
            _trust(
                run, manifest, split, prefix, tta, device, batch_size, coverage, malignant_sensitivity, checkpoint.value
            )
            if trust
            else {}
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
        typer.echo(json.dumps({**report.model_dump(mode="json"), **extra}))
        return
    console.print(_table(report))
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "auc"):
        console.print(f"{name:>18}: {_with_ci(report, name)}")
    if extra:
        ece, brier, sets = extra["ece"], extra["brier"], extra["conformal"]
        console.print(
            f"{'ECE':>18}: {ece['uncalibrated']:.4f} -> {ece['calibrated']:.4f} calibrated "
            f"(T {extra['temperature']:.3f}); "
            f"Brier {brier['uncalibrated']:.4f} -> {brier['calibrated']:.4f}"
        )
        if extra["malignant"]:
            mal = extra["malignant"]
            console.print(
                f"{'malignant':>18}: sensitivity {mal['sensitivity']:.3f}, specificity {mal['specificity']:.3f} "
                f"(P(malignant) >= {mal['threshold']})"
            )
        console.print(
            f"{'prediction sets':>18}: coverage {sets['empirical_coverage']:.3f} (target {sets['target_coverage']}), "
            f"mean size {sets['mean_set_size']:.2f}; AURC {extra['selective']['aurc']:.4f}"
        )
    where = run / prefix if prefix else run
    console.print(
        f"wrote metrics.json, confusion_matrix.png, per_class.png{', reliability.png' if extra else ''} to {where}"
    )


def _trust(
    run: Path,
    manifest: Manifest,
    split: str,
    prefix: str,
    tta: bool,
    device: str,
    batch_size: int,
    coverage: float,
    malignant_sensitivity: float,
    which: str,
) -> dict[str, Any]:
    """The trust figures (:mod:`dermasynth.serving.trust`) of the split just evaluated, calibrated on val."""
    from dermasynth.serving.trust import RELIABILITY_NAME, fit_for_run, reliability_figure, split_probabilities
    from dermasynth.serving.trust import trust_report as make_report

    store = FilesystemStore(run)
    kept = load_predictions(store, prefix)
    trained = load_trained(store, cast(Literal["best", "latest"], which), device=device)
    val = split_probabilities(trained, manifest, "val", tta=tta, batch_size=batch_size)
    fitted = fit_for_run(trained, manifest, val, coverage=coverage, malignant_sensitivity=malignant_sensitivity)
    report = make_report(kept.probabilities, kept.targets, fitted, trained.classes)
    key = f"{prefix.strip('/')}/{RELIABILITY_NAME}" if prefix.strip("/") else RELIABILITY_NAME
    title = f"{trained.config.model}, {split} split ({len(kept.targets)} images); calibrated on val"
    store.put_bytes(key, reliability_figure(kept.probabilities, kept.targets, fitted, title), "image/png")
    return report.model_copy(update={"reliability_png": str(run / key)}).model_dump(mode="json")
