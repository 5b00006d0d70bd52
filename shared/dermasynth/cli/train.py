"""``dermasynth train``: train a classifier on a dataset folder, with a progress bar; resumable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from tqdm import tqdm

from dermasynth.classifier.checkpoint import LATEST
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
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


def train(
    data: Annotated[Path, typer.Option("--data", help="dataset folder holding manifest.csv")],
    out: Annotated[Path, typer.Option("--out", help="run folder: checkpoints, best.pth, result.json")],
    model: Annotated[
        str,
        typer.Option(help="torchvision model: vgg16, vgg16_bn, resnet18, resnet50, efficientnet_b0, densenet121, ..."),
    ] = "resnet18",
    image_size: Annotated[int, typer.Option(help="square input side in pixels")] = 64,
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 32,
    sampler: Annotated[
        bool,
        typer.Option(
            "--sampler/--no-sampler", help="class-balanced WeightedRandomSampler (default) or plain shuffling"
        ),
    ] = True,
    balance: Annotated[
        str | None, typer.Option(help="sampler, loss (class-weighted loss) or none; overrides --sampler/--no-sampler")
    ] = None,
    amp: Annotated[bool, typer.Option(help="mixed precision: bf16 on CPU, fp16 with GradScaler on CUDA")] = False,
    amp_dtype: Annotated[str | None, typer.Option(help="bf16 or fp16 (with --amp)")] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="local state_dict file of the pretrained model, or a torchvision weights name (needs network)"
        ),
    ] = None,
    freeze_epochs: Annotated[int, typer.Option(help="epochs that train only the head (with --weights)")] = 0,
    lr: Annotated[float, typer.Option()] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam, adamw or sgd")] = "adam",
    schedule: Annotated[str, typer.Option(help="cosine, plateau or none")] = "cosine",
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    label_smoothing: Annotated[float, typer.Option()] = 0.0,
    grad_clip: Annotated[float | None, typer.Option(help="max gradient norm")] = None,
    patience: Annotated[
        int | None, typer.Option(help="early stop after N epochs without a better val balanced accuracy")
    ] = None,
    channels_last: Annotated[bool, typer.Option()] = False,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="train without random flips, crops, jitter")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    max_steps_per_epoch: Annotated[int | None, typer.Option(help="cut epochs short (smoke runs)")] = None,
    num_workers: Annotated[int, typer.Option(help="data-loading processes")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    resume: Annotated[bool, typer.Option(help="continue the run in --out with its stored options")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")] = False,
) -> None:
    """Train a classifier on DATASET's train split, validate on val, checkpoint every epoch to --out.

    Under torchrun (e.g. ``torchrun --nproc-per-node 2 --no-python dermasynth train ...``) it trains with
    DistributedDataParallel; rank 0 writes.
    """
    try:
        manifest = Manifest.read(data)
        stored = _stored_config(out) if resume else None
        if stored is not None:
            console.print(f"resuming {out}: training options come from the run, not the command line")
            config = stored.model_copy(update={"num_workers": num_workers, "device": device})
        else:
            chosen = balance or ("sampler" if sampler else "none")
            if balance == "sampler" and not sampler:
                raise typer.BadParameter("--balance sampler contradicts --no-sampler")
            config = TrainConfig.model_validate(
                {
                    "model": model,
                    "image_size": image_size,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "balance": chosen,
                    "amp": amp,
                    "amp_dtype": amp_dtype,
                    "weights": weights,
                    "freeze_epochs": freeze_epochs,
                    "lr": lr,
                    "optimizer": optimizer,
                    "schedule": schedule,
                    "weight_decay": weight_decay,
                    "label_smoothing": label_smoothing,
                    "grad_clip": grad_clip,
                    "patience": patience,
                    "channels_last": channels_last,
                    "seed": seed,
                    "max_steps_per_epoch": max_steps_per_epoch,
                    "num_workers": num_workers,
                    "device": device,
                    "augment": {"enabled": not no_augment},
                }
            )
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
