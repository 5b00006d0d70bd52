"""Training throughput on CPU: the engine against a minimal hand-written loop, the data loader alone, AMP.

Every arm uses the same model, batch size, generated images, preprocessing and class-balanced sampler;
arms run in turn, ``--repeats`` times, and the median images/s of each is printed with the load averages
(the machine may be shared). The engine arm is :func:`dermasynth.classifier.engine.fit` itself (its
training images/s, validation excluded); the plain arm is the loop a user would write by hand.

    python bench/train_throughput.py                      # resnet18, 64 px, batch 64, fp32
    python bench/train_throughput.py --amp                # also bf16 autocast (and channels_last)
    python bench/train_throughput.py --steps 4 --repeats 1 --batch-size 16   # quick look
    python bench/train_throughput.py --real --steps 80 --repeats 2 --amp  # real HAM10000, end to end

``--real`` measures on the real HAM10000 copy in ``../shared/data`` (skipped when it is not there): a
preloaded plain loop (every train image decoded once into one normalized tensor with PIL and
torchvision, class-balanced indices drawn with ``torch.multinomial``, no augmentation, no project code)
against ``dermasynth train`` itself, run as a subprocess for two epochs of ``--steps`` steps (its second
epoch's training images/s from ``--json``; the decoded cache is built before, outside the timing), fp32
and with ``--amp``. Both arms are timed warm: the plain loop after WARMUP_STEPS untimed steps, the
subprocess in its second epoch (a fresh process's first steps create kernels and allocate memory, which a
real training run pays once).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
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

HAM10000 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_200x150"
WARMUP_STEPS = 5
"""Untimed steps before the preloaded plain loop is timed."""


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


def preload(manifest: Manifest, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The train split decoded once with PIL + torchvision into normalized floats, as a user would."""
    from PIL import Image
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    rows = manifest.in_split("train")
    classes = sorted({r.label for r in rows})
    images = torch.stack([transform(Image.open(manifest.path_of(r)).convert("RGB")) for r in rows])
    labels = torch.tensor([classes.index(r.label) for r in rows])
    return images, labels


def preloaded_plain_loop(
    images: torch.Tensor, labels: torch.Tensor, model_name: str, batch_size: int, steps: int, amp: bool
) -> float:
    """A hand-written loop over a preloaded tensor: class-balanced draws, no augmentation, no loader."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, num_classes=int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = (1.0 / torch.bincount(labels).double())[labels]
    generator = torch.Generator().manual_seed(0)
    model.train()
    start = time.perf_counter()
    for step in range(-WARMUP_STEPS, steps):  # the first steps warm the kernels up, untimed
        if step == 0:
            start = time.perf_counter()
        index = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        inputs, targets = images[index], labels[index]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def cli_train(data: Path, model_name: str, image_size: int, batch_size: int, steps: int, extra: list[str]) -> float:
    """``dermasynth train`` end to end in its own process: the training images/s of its second epoch (from
    ``--json``), so that the process's start (imports, first kernels) is left out as in the plain loop."""
    with tempfile.TemporaryDirectory() as run:
        command = [
            str(Path(sys.executable).parent / "dermasynth"),
            *("train", "--data", str(data), "--out", run, "--model", model_name, "--device", "cpu"),
            *("--image-size", str(image_size), "--batch-size", str(batch_size), "--epochs", "2"),
            *("--max-steps-per-epoch", str(steps), "--json", *extra),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["history"][-1]["images_per_s"])


def real_arms(args: argparse.Namespace) -> None:
    """Preloaded plain loop against ``dermasynth train`` on the real HAM10000, side by side."""
    from dermasynth.data.decoded_cache import open_decoded_cache
    from dermasynth.data.importer import import_dataset

    if not args.data.is_dir():
        print(f"skipped: the real HAM10000 is not at {args.data}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = import_dataset(args.data, Path(tmp) / "ham10000", "ham10000", seed=0, copy=False)
        manifest.write(Path(tmp) / "ham10000")
        open_decoded_cache(manifest, args.image_size)  # built once, before any timing
        images, labels = preload(manifest, args.image_size)
        arms: dict[str, Callable[[], float]] = {
            "preloaded plain loop fp32": lambda: preloaded_plain_loop(
                images, labels, args.model, args.batch_size, args.steps, amp=False
            ),
            "dermasynth train fp32": lambda: cli_train(
                manifest.root, args.model, args.image_size, args.batch_size, args.steps, []
            ),
        }
        if args.amp:
            arms |= {
                "preloaded plain loop bf16": lambda: preloaded_plain_loop(
                    images, labels, args.model, args.batch_size, args.steps, amp=True
                ),
                "dermasynth train --amp": lambda: cli_train(
                    manifest.root, args.model, args.image_size, args.batch_size, args.steps, ["--amp"]
                ),
                "dermasynth train --amp --channels-last": lambda: cli_train(
                    manifest.root,
                    args.model,
                    args.image_size,
                    args.batch_size,
                    args.steps,
                    ["--amp", "--channels-last"],
                ),
            }
        print(
            f"real HAM10000 ({len(labels)} train images), {args.model}, {args.image_size} px, batch "
            f"{args.batch_size}, {args.steps} steps x {args.repeats} rounds, {args.threads} threads, CPU "
            f"{torch.backends.cpu.get_cpu_capability()}; load average before: {os.getloadavg()}",
            flush=True,
        )
        figures: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, measure in arms.items():
                figures[name].append(measure())
                print(f"  {name}: {figures[name][-1]:.1f} images/s (load {os.getloadavg()[0]:.1f})", flush=True)
    median = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name:>40}: {median[name]:8.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    plain = median["preloaded plain loop fp32"]
    print(f"{'dermasynth train fp32 / plain fp32':>40}: {median['dermasynth train fp32'] / plain:8.3f}  (goal >= 0.95)")
    if args.amp:
        for name in ("dermasynth train --amp", "dermasynth train --amp --channels-last", "preloaded plain loop bf16"):
            print(f"{name + ' / plain fp32':>40}: {median[name] / plain:8.3f}  (goal >= 1.5 for --amp)")
    print(f"load average after: {os.getloadavg()}")


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
    parser.add_argument("--real", action="store_true", help="preloaded plain loop vs dermasynth train on HAM10000")
    parser.add_argument("--data", type=Path, default=HAM10000, help="the real HAM10000 (official layout)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.real:
        real_arms(args)
        return

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
