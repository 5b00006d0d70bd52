"""``dermasynth train``: train a classifier on a dataset folder, with a progress bar; resumable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from tqdm import tqdm

from dermasynth.classifier.checkpoint import LATEST
from dermasynth.classifier.config import RUNTIME_FIELDS, TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.cli.model_options import model_options, plain, with_options
from dermasynth.data.manifest import Manifest, ManifestError
from dermasynth.progress import Progress
from dermasynth.storage import FilesystemStore
from dermasynth.storage.state_dicts import load_state

console = Console(stderr=True)


class ProgressBar:
    """Turns the engine's progress reports into one tqdm bar over all training steps."""

    def __init__(self, enabled: bool = True) -> None:
        self.bar: tqdm[None] | None = None
        self.enabled = enabled
        self.postfix: dict[str, str] = {}

    def __call__(self, progress: Progress) -> None:
        if not self.enabled or progress.epoch is None or progress.total_epochs is None:
            return
        if progress.phase == "validate":
            self.postfix["val_bacc"] = f"{progress.metrics.get('val_balanced_accuracy', float('nan')):.3f}"
            if self.bar is not None:
                self.bar.set_postfix(self.postfix)
                self.bar.write(progress.message)
            return
        if progress.step is None or progress.total_steps is None:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=progress.total_epochs * progress.total_steps,
                unit="step",
                desc="training",
                initial=(progress.epoch - 1) * progress.total_steps + progress.step - 1,
            )
        self.bar.n = (progress.epoch - 1) * progress.total_steps + progress.step
        self.bar.set_description(f"epoch {progress.epoch}/{progress.total_epochs}")
        if progress.loss is not None:
            self.postfix["loss"] = f"{progress.loss:.4f}"
        if progress.images_per_s:
            self.postfix["img/s"] = f"{progress.images_per_s:.0f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stored_config(out: Path) -> TrainConfig | None:
    if not (out / LATEST).is_file():
        return None
    return TrainConfig.model_validate(load_state(FilesystemStore(out), LATEST)["config"])


def _describe(error: ValidationError) -> str:
    """Pydantic's errors in the command line's words: ``--image-size: Input should be ...``."""
    parts = []
    for item in error.errors():
        option = "--" + "-".join(str(p) for p in item["loc"]).replace("_", "-") if item["loc"] else "options"
        parts.append(f"{option}: {item['msg']}")
    return "; ".join(parts)


TRAIN_PANEL = "Training options (TrainConfig: the same names and defaults as a training job's config)"


def train(
    data: Annotated[Path, typer.Option("--data", help="dataset folder holding manifest.csv")],
    out: Annotated[Path, typer.Option("--out", help="run folder: checkpoints, best.pth, result.json")],
    no_augment: Annotated[bool, typer.Option("--no-augment", help="train without random flips, crops, jitter")] = False,
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its stored options")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")] = False,
    **options: Any,
) -> None:
    """Train a classifier on DATASET's train split, validate on val, checkpoint every epoch to --out.

    Under torchrun (e.g. ``torchrun --nproc-per-node 2 --no-python dermasynth train ...``) it trains with
    DistributedDataParallel; rank 0 writes.
    """
    chosen = {name: plain(value) for name, value in options.items()}
    try:
        manifest = Manifest.read(data)
        stored = _stored_config(out) if resume else None
        if stored is not None:
            console.print(f"resuming {out}: training options come from the run, not the command line")
            config = stored.model_copy(update={name: chosen[name] for name in RUNTIME_FIELDS if name in chosen})
        else:
            config = TrainConfig.model_validate({**chosen, "augment": {"enabled": not no_augment}})
    except ValidationError as exc:
        console.print(f"[red]invalid training options:[/red] {_describe(exc)}")
        raise typer.Exit(2) from exc
    except ManifestError as exc:
        console.print(f"[red]cannot read the dataset:[/red] {exc}")
        raise typer.Exit(2) from exc

    bar = ProgressBar(enabled=os.environ.get("RANK", "0") == "0")
    try:
        result = fit(config, manifest, FilesystemStore(out), bar, resume=resume)
    except (FileExistsError, ValueError, FileNotFoundError) as exc:
        bar.close()
        hint = " (pass --resume to continue it)" if isinstance(exc, FileExistsError) else ""
        console.print(f"[red]training failed:[/red] {exc}{hint}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        bar.close()
        console.print(f"interrupted; the last finished epoch is kept: continue with --resume --out {out}")
        raise typer.Exit(130) from None
    bar.close()
    console.print(
        f"best epoch {result.best_epoch}/{result.epochs_run}: val balanced accuracy "
        f"{result.best_val_balanced_accuracy:.4f}{' (stopped early)' if result.stopped_early else ''}; "
        f"run in {out}"
    )
    if json_output:
        typer.echo(result.model_dump_json())


with_options(train, model_options(TrainConfig, exclude={"augment"}, panel=TRAIN_PANEL))
