"""Does GAN augmentation help on the real HAM10000? The CPU experiment config, run and summarised.

Runs ``configs/experiments/cpu-ham10000.yaml`` (resnet18 at 32 px; the sampler baseline and one arm per
lever of issue 18, three seeds; one 32 px GAN) on the 200x150 HAM10000 copy beside the repository, then
prints per arm the overall figures and per-class F1 with 95% intervals (seeds and test images
resampled), every comparison's verdict, the per-rare-class answer and the GAN's cost per arm.
The load average is printed before and after: on a shared CPU the times stretch with it.

    python bench/experiment_cpu.py                         # 49.5 min measured on 2 shared cores (load 6-13)
    python bench/experiment_cpu.py --out /tmp/e --resume   # continue an interrupted run
Skips (exit 0) when ../shared/data/ham10000_200x150 is not there.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting slow training several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from dermasynth.experiments.config import read_experiment_file
from dermasynth.experiments.data import prepare_dataset
from dermasynth.experiments.report import ExperimentReport
from dermasynth.experiments.runner import run_experiment
from dermasynth.metrics.pooled import Estimate
from dermasynth.progress import Progress
from dermasynth.storage import FilesystemStore

ROOT = Path(__file__).resolve().parents[1]
HAM10000 = Path(os.environ.get("DERMASYNTH_REAL_HAM10000", ROOT.parent / "shared" / "data" / "ham10000_200x150"))
CONFIG = ROOT / "configs" / "experiments" / "cpu-ham10000.yaml"


class Timeline:
    """Prints one line when a task starts and one per validated epoch, with the time since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phase = ""

    def __call__(self, progress: Progress) -> None:
        stamp = f"{time.perf_counter() - self.start:7.0f}s"
        if progress.phase != self.phase:
            self.phase = progress.phase
            print(f"{stamp} {progress.phase}: {progress.message.split(':')[0]}", flush=True)
        elif progress.metrics.get("stage") == "validate":
            print(f"{stamp}   {progress.message.split(': ', 1)[1]}", flush=True)
        elif progress.metrics.get("stage") == "gan" and progress.step and progress.step % 100 == 0:
            print(f"{stamp}   GAN step {progress.step}/{progress.total_steps} loss_g {progress.loss:.3f}", flush=True)


def _ci(estimate: Estimate | None) -> str:
    if estimate is None:
        return "n/a"
    if estimate.ci is None:
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f} [{estimate.ci.low:.3f}, {estimate.ci.high:.3f}]"


def summarise(report: ExperimentReport) -> None:
    """The table per arm and the verdicts per comparison and class."""
    backbone = report.backbones[0]
    print(
        f"\n== test split: {sum(report.images['test'].values())} real images of held-out lesions "
        f"({', '.join(f'{c} {n}' for c, n in report.images['test'].items())})"
    )
    print(f"\n{'arm':12} {'balanced acc [95% CI]':>24} {'macro-F1 [95% CI]':>24} {'accuracy [95% CI]':>24}")
    for arm in report.arms:
        overall = report.summary(arm.name, backbone).metrics.overall
        cells = [_ci(overall[m]) for m in ("balanced_accuracy", "macro_f1", "accuracy")]
        print(f"{arm.name:12} {cells[0]:>24} {cells[1]:>24} {cells[2]:>24}")
    print("\nper-class F1 [95% CI] (support)")
    print(f"{'class':7}" + "".join(f"{arm.name:>22}" for arm in report.arms))
    for label in report.classes:
        row = [
            _ci(report.summary(arm.name, backbone).metrics.per_class.get(label, {}).get("f1")) for arm in report.arms
        ]
        support = report.summary(report.arms[0].name, backbone).metrics.support[label]
        print(f"{label:7}" + "".join(f"{cell:>22}" for cell in row) + f"  ({support})")
    for entry in report.comparisons:
        c = entry.comparison
        print(f"\n-- {c.a} against {c.b} (paired bootstrap, {c.bootstrap} resamples)")
        print(f"   balanced accuracy: {c.statement('balanced_accuracy')}")
        print(f"   macro-F1:          {c.statement('macro_f1')}")
        for label in report.classes:
            if label in c.per_class:
                print(f"   {label:6} F1: {c.statement('f1', label)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dermasynth-experiment-cpu"))
    parser.add_argument("--resume", action="store_true", help="continue the experiment in --out")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not HAM10000.is_dir():
        print(f"skipped: the real HAM10000 is not at {HAM10000}")
        return
    torch.set_num_threads(args.threads)
    config, source = read_experiment_file(args.config)
    assert source is not None, f"{args.config} names no data"
    if source.import_from is not None and not source.import_from.is_dir():  # e.g. run from a git worktree
        source = source.model_copy(update={"import_from": HAM10000})
    print(
        f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}  threads: {args.threads}  "
        f"torch {torch.__version__}",
        flush=True,
    )
    began = time.perf_counter()
    manifest = prepare_dataset(source, args.out / "data")
    print(
        f"{time.perf_counter() - began:7.0f}s dataset: {len(manifest)} images, splits "
        f"{ {s: sum(c.values()) for s, c in manifest.split_counts().items()} }",
        flush=True,
    )
    result = run_experiment(config, manifest, FilesystemStore(args.out), args.out, Timeline(), resume=args.resume)
    wall = time.perf_counter() - began
    report = ExperimentReport.model_validate_json((args.out / "report" / "report.json").read_text())
    print(
        f"\n{args.config.name}: {len(result.runs)} runs, wall {wall / 60:.1f} min "
        f"(this process; a resumed run counts only what it redid)"
    )
    if report.synthesis is not None:
        s = report.synthesis
        print(
            f"GAN {s.gan_steps} steps at {s.gan_image_size} px in {s.gan_seconds / 60:.1f} min; synthetic images "
            f"added: { {c: s.after[c] - s.before[c] for c in s.after} }"
        )
    for run in result.runs:
        print(
            f"run {run.arm:12} train {run.train_seconds / 60:5.1f} min, best epoch {run.best_epoch}/"
            f"{run.epochs_run}, val balanced accuracy {run.best_val_balanced_accuracy:.3f}"
        )
    summarise(report)
    print("\n== rare classes (" + report.rare_rule + ")")
    for answer in report.rare_classes:
        recall = answer.recall
        shown = "n/a" if recall is None else f"{recall.difference:+.3f} [{recall.ci.low:+.3f}, {recall.ci.high:+.3f}]"
        print(f"   {answer.label:6} {answer.arm:12} recall {shown}  -> {answer.answer} ({answer.reason})")
    print("\n== GAN cost per synthetic arm (seconds)")
    for arm, cost in report.costs.items():
        print(
            f"   {arm:12} GAN {cost.gan_seconds:7.0f}  quality {cost.quality_seconds:5.0f}  synthesis "
            f"{cost.synthesis_seconds:5.0f}  filter classifier {cost.filter_seconds:5.0f}  "
            f"total {cost.total_seconds:7.0f}"
        )
    print("\n== headline")
    for line in report.headline:
        print(f"   {line}")
    print(f"\nload average after: {os.getloadavg()}")
    print(f"report: {args.out / 'report' / 'report.md'}")


if __name__ == "__main__":
    main()
