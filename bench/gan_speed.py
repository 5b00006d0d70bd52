"""GAN speed on this machine: training steps/s and generation images/s at 32 and 64 px.

Uses the CPU defaults a run resolves to (7 classes, batch 32, channel_base 1024, max_channels 64) on
random images, so only compute is measured (a real run keeps its images in memory too). Generation
is the EMA generator writing nothing, in batches of 64.

    python bench/gan_speed.py                      # 1 and 2 threads, 32 and 64 px
    python bench/gan_speed.py --threads 2 --sizes 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import time

# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting slow everything several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from dermasynth.gan.config import GanConfig
from dermasynth.gan.real_images import RealImages
from dermasynth.gan.sampling import generate
from dermasynth.gan.training_loop import GanTrainer

CLASSES = 7


def measure(size: int, threads: int, device: str, steps: int, images: int, batch_size: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    config = GanConfig(image_size=size, batch_size=batch_size, device=device).resolved()
    trainer = GanTrainer(config, CLASSES)
    data = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8)
    labels = torch.arange(256) % CLASSES
    real = RealImages(data, labels, [str(i) for i in range(CLASSES)], [])
    weights = trainer.sampling_weights(real)
    data, labels = data.to(trainer.device), labels.to(trainer.device)
    for step in range(2):  # warm-up, including one R1 step
        trainer.step(data, labels, weights, step)
    _sync(device)
    start = time.perf_counter()
    for step in range(2, 2 + steps):
        trainer.step(data, labels, weights, step)
    _sync(device)
    train_s = time.perf_counter() - start

    seeds = list(range(images))
    list(generate(trainer.generator_ema, [0] * 64, seeds[:64]))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in generate(trainer.generator_ema, [i % CLASSES for i in seeds], seeds, batch_size=64):
        pass
    _sync(device)
    generate_s = time.perf_counter() - start
    return {
        "image_size": size,
        "threads": threads,
        "batch_size": batch_size,
        "channel_base": float(config.channel_base or 0),
        "max_channels": float(config.max_channels or 0),
        "train_steps_per_s": round(steps / train_s, 3),
        "train_images_per_s": round(steps * batch_size / train_s, 1),
        "generate_images_per_s": round(images / generate_s, 1),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per setting")
    parser.add_argument("--images", type=int, default=512, help="generated images per setting")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}  torch {torch.__version__}")
    for size in args.sizes:
        for threads in args.threads:
            result = measure(size, threads, args.device, args.steps, args.images, args.batch_size)
            result["load_average_1min"] = round(os.getloadavg()[0], 2)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
