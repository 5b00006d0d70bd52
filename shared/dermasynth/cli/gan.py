"""``dermasynth gan ...``: train a class-conditional GAN, synthesize a balanced dataset, measure quality."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import torch
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.gan.artifacts import load_generator
from dermasynth.gan.config import GanConfig
from dermasynth.gan.features import classifier_feature_space, default_feature_config
from dermasynth.gan.quality import evaluate_gan
from dermasynth.gan.synthesis import SynthesisPlan, plan_counts, read_synthesis_record, synthesize
from dermasynth.gan.training_loop import train_gan
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import FilesystemStore, ObjectNotFound

app = typer.Typer(
    help="Train a class-conditional GAN, synthesize rare-class images, measure their quality.", no_args_is_help=True
)
console = Console(stderr=True)


class PhaseBars:
    """A progress callback drawing one tqdm bar per phase (``gan``, ``synthesize``, ``train``, ``evaluate``)."""

    def __init__(self) -> None:
        self.bar: tqdm[None] | None = None
        self.key: tuple[str, int | None] | None = None
        self.stop_requested = False

    def __call__(self, progress: Progress) -> None:
        if progress.step is not None and progress.total_steps:
            key = (progress.phase, progress.epoch)
            if self.bar is None or key != self.key:
                self.close()
                epoch = f" epoch {progress.epoch}/{progress.total_epochs}" if progress.epoch else ""
                self.bar = tqdm(total=progress.total_steps, desc=f"{progress.phase}{epoch}", unit="step")
                self.key = key
            self.bar.n = progress.step
            shown = {k: v for k, v in progress.metrics.items() if k in ("loss_d", "loss_g", "augment_p", "fid")}
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if isinstance(v, float)}, refresh=False)
            self.bar.refresh()
        if self.stop_requested:
            raise Cancelled

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def _stop_on_ctrl_c(bars: PhaseBars) -> Iterator[None]:
    """Ctrl-C asks the job to stop after its current step (so its checkpoint is saved); twice aborts."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if bars.stop_requested:
            raise KeyboardInterrupt
        bars.stop_requested = True
        console.print("\nstopping after this step (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        bars.close()


def _manifest(data: Path) -> Manifest:
    try:
        return Manifest.read(data)
    except ManifestError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _fail(what: str, exc: Exception) -> typer.Exit:
    console.print(f"[red]{what}:[/red] {exc}")
    return typer.Exit(2)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def _threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


@app.command("train")
def train(
    data: Annotated[Path, typer.Option("--data", help="dataset folder (manifest.csv); its train split is learned")],
    out: Annotated[Path, typer.Option("--out", help="GAN folder: options, checkpoints, grids, generator")],
    image_size: Annotated[int | None, typer.Option(help="16, 32 or 64 on CPU; 128 or 256 on GPU [default: 64]")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="training steps [default: 10000]")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    batch_size: Annotated[int | None, typer.Option(min=2, help="[default: 32]")] = None,
    augment: Annotated[str | None, typer.Option(help="ada, diffaugment or none [default: ada]")] = None,
    loss: Annotated[str | None, typer.Option(help="hinge or nonsaturating [default: nonsaturating]")] = None,
    classes: Annotated[str | None, typer.Option(help="comma-separated classes to learn [default: all]")] = None,
    seed: Annotated[int | None, typer.Option(min=0)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N [default: CUDA when available]")] = None,
    grid_every: Annotated[int | None, typer.Option(min=1, help="steps between per-class grids")] = None,
    snapshot_every: Annotated[int | None, typer.Option(min=1, help="steps between generator snapshots")] = None,
    options: Annotated[Path | None, typer.Option(help="JSON file with more GanConfig options")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (1 is fastest on busy cores)")] = None,
) -> None:
    """Train a class-conditional GAN on the real train images of --data; grids appear in OUT/grids/ as it trains.

    Ctrl-C stops after the current step with a checkpoint; continue with --resume.
    """
    _threads(threads)
    try:
        given: dict[str, Any] = json.loads(options.read_text(encoding="utf-8")) if options else {}
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read --options {options}", exc) from exc
    if not isinstance(given, dict):
        raise _fail(f"--options {options}", ValueError("expected a JSON object of GanConfig options"))
    flags = {
        "image_size": image_size,
        "steps": steps,
        "batch_size": batch_size,
        "augment": augment,
        "loss": loss,
        "classes": _csv(classes),
        "seed": seed,
        "device": device,
        "grid_every": grid_every,
        "snapshot_every": snapshot_every,
    }
    given.update({k: v for k, v in flags.items() if v is not None})
    try:
        config = GanConfig.model_validate(given)
    except ValidationError as exc:
        raise _fail("invalid GAN options", exc) from exc
    manifest = _manifest(data)
    bars = PhaseBars()
    logging.getLogger("dermasynth").setLevel(logging.WARNING)  # the bar says what happens
    try:
        with _stop_on_ctrl_c(bars):
            result = train_gan(config, manifest, FilesystemStore(out), bars, resume=resume)
    except Cancelled:
        console.print(f"stopped; the checkpoint is saved: continue with --resume --out {out}")
        raise typer.Exit(130) from None
    except (FileExistsError, ValueError) as exc:
        raise _fail("cannot train", exc) from exc
    console.print(
        f"trained {result.step} steps in {result.seconds:.0f} s ({result.steps_per_s:.2f} steps/s); "
        f"generator {result.generator_id[:12]} in {out / result.generator}; grids: {out / 'grids'}"
    )


@app.command("sample")
def sample(
    gan: Annotated[Path, typer.Option("--gan", help="GAN folder written by `dermasynth gan train`")],
    data: Annotated[Path, typer.Option("--data", help="the source dataset folder")],
    out: Annotated[Path, typer.Option("--out", help="the new dataset folder (real + synthetic rows)")],
    plan: Annotated[str, typer.Option(help="balance, at_least, real_ratio or counts")] = "balance",
    ratio: Annotated[
        float,
        typer.Option(min=0.0, help="balance: target = largest class x ratio; real_ratio: new = real images x ratio"),
    ] = 1.0,
    at_least: Annotated[int | None, typer.Option(min=0, help="at_least: images per class to reach")] = None,
    counts: Annotated[str | None, typer.Option(help="counts: e.g. df=200,vasc=150")] = None,
    classes: Annotated[str | None, typer.Option(help="only these classes get images (comma-separated)")] = None,
    truncation: Annotated[float, typer.Option(min=0.0, max=1.0, help="1: full variety; lower: typical")] = 1.0,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    filter_run: Annotated[
        Path | None,
        typer.Option(help="classifier run folder trained on the real images: keep only images it recognises"),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="with --filter-run: keep images whose p(intended class) >= this"),
    ] = None,
    max_candidates: Annotated[
        float, typer.Option(min=1.0, help="with --filter-run: candidates tried per needed image, at most")
    ] = 10.0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch")] = None,
) -> None:
    """Write a dataset to --out: the rows of --data plus synthetic train images, as the plan asks.

    With --filter-run and --min-confidence only images the real-trained classifier assigns to their class
    with at least that probability, and that copy no real image, are kept; the kept fraction per class is
    printed and recorded in OUT/synthesis.json, each kept row's confidence in the manifest.
    """
    _threads(threads)
    try:
        parsed = None if counts is None else {k.strip(): int(v) for k, v in (p.split("=") for p in _csv(counts) or [])}
    except ValueError as exc:
        raise _fail("--counts", ValueError(f"{counts!r} is not a list like df=200,vasc=150")) from exc
    try:
        synthesis_plan = SynthesisPlan.model_validate(
            {
                "mode": plan,
                "ratio": ratio,
                "at_least": at_least,
                "counts": parsed,
                "truncation": truncation,
                "seed": seed,
                "classes": _csv(classes),
                "min_confidence": min_confidence,
                "max_candidates": max_candidates,
            }
        )
    except ValidationError as exc:
        raise _fail("invalid plan", exc) from exc
    if (filter_run is None) != (min_confidence is None):
        raise _fail("filtered synthesis", ValueError("give both --filter-run RUN_DIR and --min-confidence P"))
    if filter_run is not None and not filter_run.is_dir():
        raise _fail("--filter-run", FileNotFoundError(f"{filter_run} is not a classifier run folder"))
    manifest = _manifest(data)
    bars = PhaseBars()
    try:
        needed = plan_counts(manifest, synthesis_plan)
        with _stop_on_ctrl_c(bars):
            result = synthesize(
                FilesystemStore(gan),
                manifest,
                synthesis_plan,
                out,
                bars,
                device=device,
                filter_run=None if filter_run is None else FilesystemStore(filter_run),
                filter_name=None if filter_run is None else str(filter_run),
            )
    except Cancelled:
        console.print("stopped; run the same command again to finish (images are made again identically)")
        raise typer.Exit(130) from None
    except (FileNotFoundError, FileExistsError, ObjectNotFound, ValueError) as exc:
        raise _fail(f"cannot synthesize from {gan}", exc) from exc
    before, after = manifest.class_counts("train"), result.class_counts("train")
    record = read_synthesis_record(out)
    report = record.filter if record is not None else None
    columns = ["class", "before", "asked", "added", "after"]
    if report is not None:
        columns += ["candidates", "kept fraction", "low confidence", "near-copies"]
    table = Table(title=f"{out}: train images per class")
    for column in columns:
        table.add_column(column, justify="left" if column == "class" else "right")
    for label in after:
        row = [label, str(before.get(label, 0)), str(needed.get(label, 0)), str(after[label] - before.get(label, 0))]
        row.append(str(after[label]))
        if report is not None:
            f = report.classes.get(label)
            row += (
                ["-"] * 4
                if f is None
                else [
                    str(f.candidates),
                    _fmt(f.kept_fraction, 3),
                    str(f.rejected_confidence),
                    str(f.rejected_near_copy),
                ]
            )
        table.add_row(*row)
    Console().print(table)
    if report is not None and report.shortfall:
        console.print(
            f"[yellow]the filter kept fewer images than asked for[/yellow] ({report.shortfall} short after "
            f"{report.max_candidates:g} candidates per image): lower --min-confidence or raise --max-candidates"
        )


@app.command("evaluate")
def evaluate(
    gan: Annotated[Path, typer.Option("--gan", help="GAN folder written by `dermasynth gan train`")],
    data: Annotated[Path, typer.Option("--data", help="the dataset the GAN was trained on")],
    as_json: Annotated[bool, typer.Option("--json", help="print gan_report.json on stdout")] = False,
    features: Annotated[
        Path | None,
        typer.Option(
            help="classifier run folder whose penultimate layer is the feature space [default: train a small "
            "ResNet-18 on the real images once, cached in GAN/feature_classifier]"
        ),
    ] = None,
    feature_epochs: Annotated[int | None, typer.Option(min=1, help="epochs of that default classifier")] = None,
    samples_per_class: Annotated[int | None, typer.Option(min=2, help="[default: as many as real images]")] = None,
    truncation: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="local file of torchmetrics' FID Inception-v3 weights (torch-fidelity "
            "pt_inception-2015-12-05-6726825d.pth): FID/KID also in that standard feature space"
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch")] = None,
) -> None:
    """Per-class FID, KID, precision/recall and near-copies; writes GAN/gan_report.json and GAN/evaluation/."""
    _threads(threads)
    manifest = _manifest(data)
    bars = PhaseBars()
    try:
        extractor, description, feature_config = None, None, None
        if features is not None:
            space = classifier_feature_space(
                load_trained(FilesystemStore(features), "best", device or "cpu"), str(features)
            )
            extractor, description = space.extract, space.description
        elif feature_epochs is not None:
            size = load_generator(FilesystemStore(gan), "cpu").config.image_size
            feature_config = default_feature_config(size).model_copy(update={"epochs": feature_epochs})
        with _stop_on_ctrl_c(bars):
            report = evaluate_gan(
                FilesystemStore(gan),
                manifest,
                extractor,
                feature_space=description,
                feature_config=feature_config,
                samples_per_class=samples_per_class,
                truncation=truncation,
                seed=seed,
                device=device,
                progress=bars,
                standard_weights=inception_weights,
            )
    except Cancelled:
        console.print("stopped")
        raise typer.Exit(130) from None
    except (FileNotFoundError, ObjectNotFound, ValueError) as exc:
        raise _fail(f"cannot evaluate {gan}", exc) from exc
    if as_json:
        typer.echo(report.model_dump_json())
        return
    table = Table(title=f"GAN {report.generator_id[:12]} at step {report.gan_step}, {report.image_size} px")
    standard = report.standard_weights is not None
    columns = ["class", "real", "generated", "FID", "KID x1000", "precision", "recall", "near-copies"]
    columns += ["std FID", "std KID x1000"] if standard else []
    for column in columns:
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, q in report.classes.items():
        table.add_row(
            label,
            str(q.real_images),
            str(q.generated_images),
            _fmt(q.fid, 1),
            _fmt(None if q.kid_mean is None else q.kid_mean * 1000, 1),
            _fmt(q.precision, 2),
            _fmt(q.recall, 2),
            str(q.near_copies),
            *(
                [_fmt(q.standard_fid, 1), _fmt(None if q.standard_kid_mean is None else q.standard_kid_mean * 1000, 1)]
                if standard
                else []
            ),
        )
    Console().print(table)
    console.print(f"feature space: {report.feature_space}")
    console.print(f"standard feature space: {report.standard_feature_space}")
    console.print(
        f"near-copy threshold: pixel RMSE {report.near_copy_threshold:.4f}; report: {gan / 'gan_report.json'}"
    )


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
