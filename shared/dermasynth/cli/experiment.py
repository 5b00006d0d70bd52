"""``dermasynth experiment``: run the GAN-augmentation ablation from a config file, with progress bars; resumable."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from tqdm import tqdm

from dermasynth.data.formats import FormatError
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.experiments.config import read_experiment_file
from dermasynth.experiments.data import DataSource, prepare_dataset
from dermasynth.experiments.report import REPORT_MARKDOWN
from dermasynth.experiments.runner import REPORT_PREFIX, run_experiment
from dermasynth.progress import Progress
from dermasynth.storage import FilesystemStore

console = Console(stderr=True, soft_wrap=True)
DATA_FOLDER = "data"


class ExperimentProgressBars:
    """One bar over the experiment's tasks (GAN, synthesis, each run, report) and one over the current task."""

    def __init__(self) -> None:
        self.outer: tqdm[None] | None = None
        self.inner: tqdm[None] | None = None
        self.task: object = None

    def __call__(self, progress: Progress) -> None:
        task, tasks = progress.metrics.get("task"), progress.metrics.get("tasks")
        if not isinstance(task, int) or not isinstance(tasks, int):
            return
        if self.outer is None:
            self.outer = tqdm(total=tasks, desc="experiment", unit="task", position=0)
        if task != self.task:
            self.task = task
            self._close_inner()
            self.outer.n = task - 1
            self.outer.set_description(progress.phase)
            self.outer.write(f"{progress.phase}: {progress.message.removesuffix(': start: starting')}")
        if progress.step is not None and progress.total_steps:
            epochs = progress.total_epochs or 1
            total = progress.total_steps * epochs
            if self.inner is None or self.inner.total != total:
                self._close_inner()
                self.inner = tqdm(total=total, unit="step", position=1, leave=False)
            self.inner.n = ((progress.epoch or 1) - 1) * progress.total_steps + progress.step
            self.inner.set_description(
                str(progress.metrics.get("stage", "")) + (f" epoch {progress.epoch}/{epochs}" if progress.epoch else "")
            )
            if progress.loss is not None:
                self.inner.set_postfix(loss=f"{progress.loss:.4f}", refresh=False)
            self.inner.refresh()
        elif progress.metrics.get("stage") == "validate" and self.outer is not None:
            self.outer.write(f"  {progress.message}")

    def _close_inner(self) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def close(self) -> None:
        self._close_inner()
        if self.outer is not None:
            self.outer.n = self.outer.total or 0
            self.outer.close()


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}" for item in error.errors())


def experiment(
    config: Annotated[
        Path, typer.Option("--config", help="experiment config file (YAML), e.g. configs/experiments/tiny.yaml")
    ],
    out: Annotated[Path, typer.Option("--out", help="experiment folder: GAN, runs, report/")],
    resume: Annotated[bool, typer.Option(help="continue the experiment in --out (finished work is kept)")] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="a dataset folder (manifest.csv) instead of the config's data section")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="where to synthesize and evaluate: cpu, cuda or cuda:N (default: CUDA when available)"),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")] = False,
) -> None:
    """Train every arm x backbone x seed of CONFIG, compare the arms on real held-out images, write the report.

    The report (report.md, report.json, PNG figures) is written to OUT/report/. An interrupted experiment
    continues with --resume: finished runs are kept, a half-trained run resumes from its checkpoint.
    """
    try:
        options, source = read_experiment_file(config)
        if data is not None:
            source = DataSource(dataset=data)
        if source is None:
            raise typer.BadParameter("the config has no data section; name a dataset folder with --data")
        manifest: Manifest = prepare_dataset(source, out / DATA_FOLDER)
    except ValidationError as exc:
        console.print(f"[red]invalid experiment config {config}:[/red] {_describe(exc)}")
        raise typer.Exit(2) from exc
    except (FileNotFoundError, FileExistsError, ValueError, ManifestError, FormatError) as exc:
        console.print(f"[red]cannot start the experiment:[/red] {exc}")
        raise typer.Exit(2) from exc

    bars = ExperimentProgressBars()
    logging.getLogger("dermasynth").setLevel(logging.WARNING)  # the bars say what happens
    try:
        result = run_experiment(options, manifest, FilesystemStore(out), out, bars, resume=resume, device=device)
    except (FileExistsError, ValueError) as exc:
        bars.close()
        hint = " (pass --resume to continue it)" if isinstance(exc, FileExistsError) else ""
        console.print(f"[red]experiment failed:[/red] {exc}{hint}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        bars.close()
        console.print(
            f"interrupted; finished runs and the last checkpoints are kept: continue with --resume --out {out}"
        )
        raise typer.Exit(130) from None
    bars.close()
    for line in result.headline:
        console.print(line, markup=False, highlight=False)
    console.print(f"report: {out / REPORT_PREFIX / REPORT_MARKDOWN} ({len(result.runs)} runs, {result.wall_s:.0f} s)")
    if json_output:
        typer.echo(result.model_dump_json())
