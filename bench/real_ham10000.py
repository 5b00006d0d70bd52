"""ResNet-18 from scratch at 64 px on the real HAM10000, with and without the class-balanced sampler.

The 10,015 images are imported by reference into a lesion-level split (70/15/15, seed 0). Each arm
trains for the same number of epochs, chosen from a short calibration run (two epochs of a few steps, timed
in the second) so that an arm takes about ``--budget-min`` minutes on this CPU (a hard stop at 1.5x the
budget guards against load spikes), keeps its best epoch by validation balanced accuracy, and is evaluated
on the held-out test lesions: balanced accuracy, macro-F1 and per-class recall with 95% bootstrap intervals.

    python bench/real_ham10000.py                    # about 10 minutes per arm
    python bench/real_ham10000.py --budget-min 2     # a shorter look
    python bench/real_ham10000.py --budget-min 12 --data-paths per_image,cache   # old vs new data path
    python bench/real_ham10000.py --budget-min 12 --data-paths per_image,cache --seeds 0,1,2

With ``--data-paths`` the arms are training data paths (class-balanced sampler in each), each calibrated
on its own speed so that it fills the same budget (the decoded cache is built before, outside the budget).
With ``--seeds`` every arm is trained once per training seed (the split stays the same), and the table
ends with each arm's mean and standard deviation over the seeds and the paired differences between arms:
one run's bootstrap interval covers the test set's sampling, not the spread between training runs.
Skips (exit 0) when ../shared/data/ham10000_200x150 is not there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting slow training several-fold
# (measured here: resnet18 64 px, 2 threads, load 7: 7 images/s spinning, 30 passive). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from dermasynth.classifier.checkpoint import BEST
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.classifier.evaluate import EvaluationReport, evaluate_run
from dermasynth.data.decoded_cache import open_decoded_cache
from dermasynth.data.importer import import_dataset
from dermasynth.data.manifest import Manifest
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import FilesystemStore

HAM10000 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_200x150"


class Deadline:
    """A progress callback that cancels a run once it has used its time."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.hit = False

    def __call__(self, progress: Progress) -> None:
        if time.monotonic() > self.end:
            self.hit = True
            raise Cancelled("time budget used up")


def calibrate(config: TrainConfig, manifest: Manifest, steps: int, budget_s: float) -> int:
    """Epochs that fit ``budget_s``, from a short run of two epochs of ``steps`` steps.

    The training speed is the second epoch's: the first one's steps also create the kernels and allocate
    memory, which a long run pays once, and they vary between runs (on one machine the cache arm's first-epoch
    calibration read 81.2 images/s, and 65.6 in the next run, though its augmentation had not become slower).
    The validation and setup time is what the run took besides training, per epoch.
    """
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        result = fit(
            config.model_copy(update={"epochs": 2, "max_steps_per_epoch": steps}), manifest, FilesystemStore(Path(run))
        )
        wall = time.perf_counter() - start
    record = result.history[-1]
    train_images = len(manifest.in_split("train"))
    other_s = max(wall - sum(r.train_s for r in result.history), 0.0) / len(result.history)
    epoch_s = train_images / record.images_per_s + other_s
    epochs = max(1, math.floor(budget_s / epoch_s))
    print(
        f"calibration: {record.images_per_s:.1f} train images/s, ~{epoch_s:.0f} s per epoch with validation "
        f"-> {epochs} epochs per arm (load average {os.getloadavg()})",
        flush=True,
    )
    return epochs


def run_arm(name: str, config: TrainConfig, manifest: Manifest, folder: Path, budget_s: float) -> dict[str, Any]:
    store = FilesystemStore(folder / name)
    deadline = Deadline(1.5 * budget_s)
    start = time.perf_counter()
    try:
        result = fit(config, manifest, store, deadline)
        epochs_run, best_epoch = result.epochs_run, result.best_epoch
    except Cancelled:
        epochs_run, best_epoch = -1, -1
    train_s = time.perf_counter() - start
    row: dict[str, Any] = {
        "arm": name,
        "balance": config.balance,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "cut_by_deadline": deadline.hit,
        "train_s": round(train_s, 1),
        "load_average": os.getloadavg(),
        "test": None,
    }
    if not store.exists(BEST):
        print(f"{name}: no epoch finished within 1.5x the budget; nothing to evaluate", flush=True)
        return row
    report: EvaluationReport = evaluate_run(store, manifest, "test", bootstrap=1000, seed=0)
    return row | {
        "test": report.model_dump(include={"n", "accuracy", "balanced_accuracy", "macro_f1", "auc", "ci", "per_class"})
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HAM10000, help="HAM10000 folder (official layout)")
    parser.add_argument("--budget-min", type=float, default=10.0, help="training minutes per arm")
    parser.add_argument("--arms", default="sampler,none", help="comma-separated balance modes: sampler, none, loss")
    parser.add_argument(
        "--data-paths", default=None, help="compare data paths instead: e.g. per_image,cache (balance sampler)"
    )
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (with --data-paths)")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs (checkpoints, metrics, figures) here")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: the real HAM10000 is not at {args.data}")
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    budget_s = args.budget_min * 60
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        manifest, _ = import_dataset(args.data, Path(tmp) / "ham10000", "ham10000", seed=0, copy=False)
        print(f"HAM10000: {len(manifest)} images, split by lesion: {manifest.split_counts()}", flush=True)
        base = TrainConfig(
            model=args.model,
            image_size=args.image_size,
            batch_size=args.batch_size,
            epochs=1,
            num_workers=args.num_workers,
            amp=args.amp,
            device="cpu",
            keep_epoch_checkpoints=False,
        )
        rows = []
        if args.data_paths:
            open_decoded_cache(manifest, args.image_size, base.crop)  # built once, outside every arm's budget
            seeds = [int(seed) for seed in args.seeds.split(",")]
            configs = []
            for path in args.data_paths.split(","):
                config = base.model_copy(update={"data_path": path.strip()})
                configs.append(config.model_copy(update={"epochs": calibrate(config, manifest, 20, budget_s)}))
            for seed in seeds:  # seed-major: a load change hits both arms of a seed, not one arm of all seeds
                for config in configs:
                    suffix = f"-seed{seed}" if len(seeds) > 1 else ""
                    name = f"path-{config.data_path}{suffix}"
                    row = run_arm(name, config.model_copy(update={"seed": seed}), manifest, folder, budget_s)
                    rows.append(row | {"path": config.data_path, "seed": seed})
                    print(json.dumps(rows[-1]), flush=True)
            _print_table(rows, f"{args.model} from scratch, {args.image_size} px, {args.budget_min:g} min per arm")
            if len(seeds) > 1:
                _print_seed_summary(rows, [config.data_path for config in configs], seeds)
            return
        epochs = calibrate(base, manifest, steps=10, budget_s=budget_s)
        for balance in args.arms.split(","):
            config = TrainConfig.model_validate({**base.model_dump(), "epochs": epochs, "balance": balance.strip()})
            row = run_arm(f"balance-{config.balance}", config, manifest, folder, budget_s)
            rows.append(row)
            print(json.dumps(row), flush=True)
    _print_table(rows, f"{args.model} from scratch, {args.image_size} px, {epochs} epochs per arm")


def _with_ci(test: dict[str, Any], name: str) -> str:
    ci = test["ci"][name]
    return f"{test[name]:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    rows = [row for row in rows if row["test"] is not None]
    print(f"\n{title}; metrics on the held-out test lesions (95% bootstrap CI)")
    print(f"{'arm':>16} {'epochs':>6} {'train s':>8} {'balanced accuracy':>22} {'macro-F1':>22} {'accuracy':>22}")
    for row in rows:
        test = row["test"]
        print(
            f"{row['arm']:>16} {row['epochs_run']:>6} {row['train_s']:>8} {_with_ci(test, 'balanced_accuracy'):>22} "
            f"{_with_ci(test, 'macro_f1'):>22} {_with_ci(test, 'accuracy'):>22}"
        )
    classes = list(rows[0]["test"]["per_class"]) if rows else []
    print(f"{'recall per class':>16} " + " ".join(f"{c:>7}" for c in classes))
    for row in rows:
        print(f"{row['arm']:>16} " + " ".join(f"{row['test']['per_class'][c]['recall']:7.3f}" for c in classes))
    print(
        f"{'test support':>16} " + " ".join(f"{rows[0]['test']['per_class'][c]['support']:7d}" for c in classes)
        if rows
        else ""
    )
    print(f"load average at the end: {os.getloadavg()}")


def _print_seed_summary(rows: list[dict[str, Any]], paths: list[str], seeds: list[int]) -> None:
    """Each arm's mean and standard deviation over seeds, and the per-seed differences to the first arm."""
    scores = {
        (row["path"], row["seed"]): {m: row["test"][m] for m in ("balanced_accuracy", "macro_f1", "accuracy")}
        for row in rows
        if row["test"] is not None
    }
    print(f"\nover training seeds {seeds} (mean +- standard deviation; n = runs that finished)")
    for metric in ("balanced_accuracy", "macro_f1", "accuracy"):
        for path in paths:
            values = torch.tensor([scores[path, s][metric] for s in seeds if (path, s) in scores], dtype=torch.float64)
            std = values.std().item() if len(values) > 1 else float("nan")
            print(f"{metric:>18} {path:>10}: {values.mean().item():.3f} +- {std:.3f} (n={len(values)})")
        for path in paths[1:]:
            diffs = [
                scores[path, s][metric] - scores[paths[0], s][metric]
                for s in seeds
                if (path, s) in scores and (paths[0], s) in scores
            ]
            shown = ", ".join(f"{d:+.3f}" for d in diffs)
            mean = sum(diffs) / len(diffs) if diffs else float("nan")
            print(f"{metric:>18} {path} - {paths[0]} per seed: {shown}; mean {mean:+.3f}")


if __name__ == "__main__":
    main()
