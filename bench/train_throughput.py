"""Training throughput on CPU: the engine against a minimal hand-written loop, the data loader alone, AMP.

Every arm uses the same model, batch size, generated images, preprocessing and class-balanced sampler;
arms run in turn, ``--repeats`` times, and the median images/s of each is printed with the load averages
(the machine may be shared). The engine arm is :func:`dermasynth.classifier.engine.fit` itself (its
training images/s, validation excluded); the plain arm is the loop a user would write by hand.

    python bench/train_throughput.py                      # resnet18, 64 px, batch 64, fp32
    python bench/train_throughput.py --amp                # also bf16 autocast (and channels_last)
    python bench/train_throughput.py --steps 4 --repeats 1 --batch-size 16   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting slow training several-fold
# (measured here: resnet18 64 px, 2 threads, load 7: 7 images/s spinning, 30 passive). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import nn
from torch.utils.data import DataLoader

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.classifier.models import build_model
from dermasynth.classifier.sampling import weighted_sampler
from dermasynth.data.dataset import ManifestDataset
from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.manifest import Manifest
from dermasynth.data.splits import SplitFractions
from dermasynth.data.transforms import Preprocessing
from dermasynth.storage import FilesystemStore


def _loader(manifest: Manifest, config: TrainConfig) -> DataLoader[Any]:
    """The same data pipeline the engine builds: train transform, weighted sampler, workers."""
    preprocessing = Preprocessing(image_size=config.image_size, crop=config.crop)
    dataset = ManifestDataset(
        manifest, manifest.in_split("train"), preprocessing.train_transform(config.augment), manifest.classes
    )
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        drop_last=True,
        sampler=weighted_sampler(dataset.targets, len(manifest.classes), generator=generator),
        generator=generator,
    )


def loader_only(manifest: Manifest, config: TrainConfig, steps: int) -> float:
    """Images/s of the data pipeline alone."""
    images = 0
    start = time.perf_counter()
    for step, (inputs, _) in enumerate(_loader(manifest, config), start=1):
        images += inputs.size(0)
        if step == steps:
            break
    return images / (time.perf_counter() - start)


def plain_loop(manifest: Manifest, config: TrainConfig, steps: int) -> float:
    """A minimal hand-written training loop: images/s over ``steps`` steps from the loader's start."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, len(manifest.classes))
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    criterion = nn.CrossEntropyLoss()
    autocast: Callable[[], Any] = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if config.amp else contextlib.nullcontext
    )
    model.train()
    images = 0
    start = time.perf_counter()
    for step, (inputs, targets) in enumerate(_loader(manifest, config), start=1):
        inputs = inputs.to(memory_format=memory_format)
        with autocast():
            loss = criterion(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += inputs.size(0)
        if step == steps:
            break
    return images / (time.perf_counter() - start)


def engine(manifest: Manifest, config: TrainConfig, steps: int) -> float:
    """The engine's own training images/s (``fit``, one epoch of ``steps`` steps)."""
    with tempfile.TemporaryDirectory() as run:
        result = fit(config.model_copy(update={"max_steps_per_epoch": steps}), manifest, FilesystemStore(Path(run)))
    return result.history[0].images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all arms (median reported)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--amp", action="store_true", help="also measure bf16 autocast, with and without channels_last")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    base = TrainConfig(
        model=args.model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=1,
        num_workers=args.num_workers,
        device="cpu",
        keep_epoch_checkpoints=False,
    )
    arms: dict[str, tuple[Callable[[Manifest, TrainConfig, int], float], TrainConfig]] = {
        "data loader alone": (loader_only, base),
        "plain loop fp32": (plain_loop, base),
        "engine fp32": (engine, base),
    }
    if args.amp:
        bf16 = base.model_copy(update={"amp": True})
        bf16_cl = base.model_copy(update={"amp": True, "channels_last": True})
        arms |= {
            "plain loop bf16": (plain_loop, bf16),
            "plain loop bf16+channels_last": (plain_loop, bf16_cl),
            "engine bf16": (engine, bf16),
            "engine bf16+channels_last": (engine, bf16_cl),
        }

    with tempfile.TemporaryDirectory() as tmp:
        count = round(args.steps * args.batch_size / 0.85) + 32
        manifest = make_demo_dataset(
            Path(tmp) / "data",
            count=count,
            size=args.image_size,
            seed=0,
            fractions=SplitFractions(train=0.9, val=0.05, test=0.05),
        )
        print(
            f"{args.model}, {args.image_size} px, batch {args.batch_size}, {args.steps} steps x {args.repeats} "
            f"rounds, {args.num_workers} loader workers, {args.threads} threads, CPU "
            f"{torch.backends.cpu.get_cpu_capability()}; load average before: {os.getloadavg()}"
        )
        figures: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, (measure, config) in arms.items():
                figures[name].append(measure(manifest, config, args.steps))
    median = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name:>32}: {median[name]:8.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = median["engine fp32"] / median["plain loop fp32"]
    print(f"{'engine / plain loop (fp32)':>32}: {ratio:8.3f}  (goal >= 0.95)")
    if args.amp:
        for name in ("plain loop bf16", "plain loop bf16+channels_last", "engine bf16", "engine bf16+channels_last"):
            print(f"{name + ' / plain fp32':>32}: {median[name] / median['plain loop fp32']:8.3f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
