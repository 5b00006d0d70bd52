"""``dermasynth data ...``: make, import and describe datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from dermasynth.config import get_settings
from dermasynth.data.demo import class_counts, make_demo_dataset
from dermasynth.data.formats import FormatError
from dermasynth.data.importer import REPORT_NAME, import_dataset
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.data.schemas import DatasetFormat
from dermasynth.data.splits import SplitFractions
from dermasynth.data.stats import dataset_stats, plot_class_distribution

app = typer.Typer(help="Make, import and describe datasets.", no_args_is_help=True)
console = Console(stderr=True)


def _fractions(val: float, test: float) -> SplitFractions:
    try:
        return SplitFractions(train=1 - val - test, val=val, test=test)
    except ValueError as exc:
        raise typer.BadParameter(f"--val-frac {val} and --test-frac {test}: {exc}") from exc


@app.command("make-demo")
def make_demo(
    out_dir: Annotated[Path, typer.Argument(help="folder for the new dataset")],
    size: Annotated[int, typer.Option(min=16, max=512, help="image height in pixels (width is 4/3)")] = 64,
    count: Annotated[int, typer.Option(min=28, help="number of images, in HAM10000's class proportions")] = 700,
    seed: Annotated[int, typer.Option(help="fixes every image and the split")] = 0,
    val_frac: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.15,
    test_frac: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.15,
) -> None:
    """Write a dataset of GENERATED demo lesions (drawings, not real skin) with lesion-grouped splits."""
    fractions = _fractions(val_frac, test_frac)
    total = sum(class_counts(count).values())
    with tqdm(total=total, desc="drawing generated lesions", unit="img") as bar:
        manifest = make_demo_dataset(out_dir, count, size, seed, fractions, on_image=bar.update)
    console.print(f"wrote {len(manifest)} generated images and {out_dir / 'manifest.csv'}")


@app.command("import")
def import_(
    src: Annotated[Path, typer.Argument(help="the dataset as downloaded (a folder)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the DermaSynth dataset")],
    format: Annotated[
        DatasetFormat, typer.Option("--format", help="the layout (auto detects it)")
    ] = DatasetFormat.AUTO,
    seed: Annotated[int, typer.Option(help="seeds the lesion-grouped split")] = 0,
    val_frac: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.15,
    test_frac: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.15,
    resplit: Annotated[bool, typer.Option(help="draw new splits even if the source has them")] = False,
    reference: Annotated[bool, typer.Option(help="reference source files instead of copying them")] = False,
) -> None:
    """Validate every image of SRC and write manifest.csv and import_report.json to --out."""
    fractions = _fractions(val_frac, test_frac)
    try:
        with tqdm(desc="checking images", unit="file") as bar:
            manifest, report = import_dataset(
                src,
                out,
                format.value,
                seed=seed,
                fractions=fractions,
                resplit=resplit,
                copy=not reference,
                max_pixels=get_settings().max_image_pixels,
                on_file=bar.update,
            )
    except (FormatError, ManifestError, FileExistsError) as exc:
        console.print(f"[red]import failed:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"{report.format}: {report.files_seen} files seen, {report.accepted} accepted, "
        f"{report.rejected} rejected {report.rejected_by_reason or ''}"
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if report.missing_files:
        console.print(f"[yellow]{len(report.missing_files)} labelled images were not found[/yellow]")
    console.print(f"wrote {out / 'manifest.csv'} ({len(manifest)} images) and {out / REPORT_NAME}")


@app.command("stats")
def stats(
    dataset_dir: Annotated[Path, typer.Argument(help="a DermaSynth dataset folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a class-distribution bar chart PNG here")] = None,
) -> None:
    """Images, lesions, and counts by class, split and source."""
    try:
        manifest = Manifest.read(dataset_dir)
    except ManifestError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    result = dataset_stats(manifest)
    if plot is not None:
        plot_class_distribution(manifest, plot)
    if as_json:
        typer.echo(json.dumps(result.model_dump()))
        return
    table = Table(title=f"{dataset_dir}: {result.images} images, {result.lesions} lesions")
    table.add_column("class")
    for split in result.splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for label, total in result.classes.items():
        table.add_row(label, *[str(result.splits[s].get(label, 0)) for s in result.splits], str(total))
    Console().print(table)
    console.print(f"sources: {result.sources}")
