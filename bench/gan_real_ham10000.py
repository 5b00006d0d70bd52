"""The class-conditional GAN on the real HAM10000 at 64 px under a fixed CPU budget, and its quality.

The 10,015 images are imported by reference into a lesion-level split (70/15/15, seed 0). The GAN
trains on the train split's real images for ``--budget-min`` minutes (stopped through its progress
callback, then finalized by resuming with the step it reached), and is evaluated per class: FID and
KID in the feature space of a ResNet-18 trained here on the real training images (a few short epochs,
cached in the GAN folder), precision/recall (k=3), and near-copies of real training images. The
per-class grids are copied to ``--out`` to be looked at.

    python bench/gan_real_ham10000.py                     # 25 minutes of GAN training
    python bench/gan_real_ham10000.py --budget-min 5      # a shorter look
Skips (exit 0) when ../shared/data/ham10000_200x150 is not there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting slow everything several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.importer import import_dataset
from dermasynth.gan.artifacts import RESULT_KEY, GanResult
from dermasynth.gan.config import GanConfig
from dermasynth.gan.quality import evaluate_gan
from dermasynth.gan.training_loop import train_gan
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import FilesystemStore

HAM10000 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_200x150"


class Deadline:
    """A progress callback that stops training once its time is used (the loop checkpoints, then raises)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.step = 0

    def __call__(self, progress: Progress) -> None:
        self.step = progress.step or 0
        if self.step % 100 == 0:
            print(f"  step {self.step}: {json.dumps(progress.metrics)} load {os.getloadavg()[0]:.1f}", flush=True)
        if time.monotonic() > self.end:
            raise Cancelled("time budget used up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HAM10000)
    parser.add_argument(
        "--out", type=Path, default=Path("var/bench/gan_ham10000"), help="GAN folder (kept: checkpoints, grids, report)"
    )
    parser.add_argument("--budget-min", type=float, default=25.0, help="GAN training time")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--feature-epochs", type=int, default=4)
    parser.add_argument("--feature-steps", type=int, default=60, help="steps per feature-classifier epoch")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the GAN already in --out again")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: the real HAM10000 is not at {args.data}")
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    print(f"load average at the start: {os.getloadavg()}  threads: {args.threads}  cores: {os.cpu_count()}")
    if args.out.exists() and not args.evaluate_only:
        shutil.rmtree(args.out)
    gan = FilesystemStore(args.out)
    config = GanConfig(
        image_size=64,
        steps=1_000_000,
        batch_size=args.batch_size,
        grid_every=500,
        snapshot_every=1000,
        checkpoint_every=100,
        device="cpu",
        log_every=100,
    )
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = import_dataset(args.data, Path(tmp) / "ham10000", "ham10000", seed=0, copy=False)
        print(f"train split: {manifest.class_counts('train')}", flush=True)
        if args.evaluate_only:
            result = GanResult.model_validate_json(gan.get_bytes(RESULT_KEY))
        else:
            print(f"GAN options: {config.resolved().model_dump_json()}", flush=True)
            deadline = Deadline(args.budget_min * 60)
            with contextlib.suppress(Cancelled):
                train_gan(config, manifest, gan, deadline)
            result = train_gan(GanConfig(steps=deadline.step), manifest, gan, resume=True)  # finalize at that step
        print(
            f"GAN: {result.step} steps in {result.seconds:.0f} s ({result.steps_per_s:.3f} steps/s); "
            f"generator {result.generator_id[:12]}; load {os.getloadavg()}",
            flush=True,
        )

        features = TrainConfig(
            model="resnet18",
            image_size=64,
            epochs=args.feature_epochs,
            batch_size=64,
            max_steps_per_epoch=args.feature_steps,
            num_workers=0,
            device="cpu",
        )
        began = time.perf_counter()
        report = evaluate_gan(gan, manifest, feature_config=features)
        print(f"evaluation: {time.perf_counter() - began:.0f} s; feature space: {report.feature_space}")
    print(
        f"{'class':6} {'real':>5} {'gen':>5} {'FID':>7} {'KIDx1e3':>13} {'prec':>5} {'rec':>5} {'copies':>6} "
        f"{'min RMSE':>8} {'ratio med':>9}"
    )
    for label, q in report.classes.items():
        kid = f"{(q.kid_mean or 0) * 1000:.1f}±{(q.kid_std or 0) * 1000:.1f}"
        print(
            f"{label:6} {q.real_images:5d} {q.generated_images:5d} {q.fid or float('nan'):7.1f} {kid:>13} "
            f"{q.precision or 0:5.2f} {q.recall or 0:5.2f} {q.near_copies:6d} {q.nearest_real_rmse_min:8.4f} "
            f"{q.nearest_ratio_median or float('nan'):9.3f}"
        )
    print(
        f"mean FID {report.mean_fid:.1f}, mean KID {report.mean_kid:.4f}, near-copies {report.near_copies} "
        f"(threshold RMSE {report.near_copy_threshold:.4f})"
    )
    print(
        f"grids: {args.out / result.grids[-1]} and {args.out}/grids/step-*/<class>.png; "
        f"evaluation grids under {args.out / 'evaluation'}"
    )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
