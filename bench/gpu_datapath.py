"""GPU training throughput of the engine on the decoded-cache data path (issue 13's GPU goals).

Trains ``fit`` itself for two short epochs per arm (the second, warm one is reported: cuDNN autotuning
and the cache's trip to the GPU happen in the first) and prints training images/s. ``gpu_datapath.sh``
runs it with ``nvidia-smi`` sampling utilization beside it.

    python bench/gpu_datapath.py                       # resnet18 64 px and resnet50 224 px, bf16 + channels_last
    python bench/gpu_datapath.py --data DATASET_FOLDER # a DermaSynth dataset instead of generated lesions
Goals: resnet18 at 64 px >= 15,000 images/s on an H100; resnet50 at 224 px >= 3,500 images/s.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.data.decoded_cache import open_decoded_cache
from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore

ARMS = {"resnet18": (64, 512), "resnet50": (224, 256)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a dataset folder (default: 10,015 demo lesions)")
    parser.add_argument("--steps", type=int, default=150, help="steps per epoch")
    parser.add_argument("--arms", default="resnet18,resnet50")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return
    with tempfile.TemporaryDirectory() as tmp:
        manifest = (
            Manifest.read(args.data)
            if args.data
            else make_demo_dataset(Path(tmp) / "demo", count=10_015, size=150, seed=0)
        )
        print(f"{torch.cuda.get_device_name()}: {len(manifest)} images", flush=True)
        for name in args.arms.split(","):
            size, batch = ARMS[name]
            start = time.perf_counter()
            open_decoded_cache(manifest, size)
            print(f"{name}: decoded cache at {size} px ready in {time.perf_counter() - start:.0f} s", flush=True)
            config = TrainConfig(
                model=name,
                image_size=size,
                batch_size=batch,
                epochs=2,
                max_steps_per_epoch=args.steps,
                amp=True,
                amp_dtype="bf16",
                channels_last=True,
                device="cuda",
                keep_epoch_checkpoints=False,
                log_every=50,
            )
            result = fit(config, manifest, FilesystemStore(Path(tmp) / f"run-{name}"))
            warm = result.history[-1]
            print(
                f"{name} {size} px batch {batch} bf16+channels_last: {warm.images_per_s:,.0f} images/s "
                f"(epoch 1: {result.history[0].images_per_s:,.0f}; data path {result.data_path})",
                flush=True,
            )


if __name__ == "__main__":
    main()
