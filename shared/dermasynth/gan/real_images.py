"""The real images a GAN learns from: the train split's non-synthetic rows, decoded once into memory.

GAN datasets are small at GAN resolutions (HAM10000's 7,000 training images are 86 MB at 64 px as
uint8), and keeping them in one tensor spares a data loader per step, which matters on a CPU. They
come from the decoded-image cache (:mod:`dermasynth.data.decoded_cache`) the classifier shares, so a
dataset is decoded once per geometry for training, GAN and evaluation alike.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from dermasynth.data.decoded_cache import open_decoded_cache
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest, Record
from dermasynth.data.transforms import Preprocessing

GAN_MEAN = (0.5, 0.5, 0.5)
GAN_STD = (0.5, 0.5, 0.5)


def gan_preprocessing(image_size: int, crop: Literal["center", "none"] = "center") -> Preprocessing:
    """The project's preprocessing at GAN resolution, normalized to [-1, 1] (the generator's range)."""
    return Preprocessing(image_size=image_size, crop=crop, mean=GAN_MEAN, std=GAN_STD)


@dataclass(frozen=True)
class RealImages:
    """uint8 images (N, 3, S, S), class indices (N,), the class names and the records they came from."""

    images: Tensor
    labels: Tensor
    classes: list[str]
    records: list[Record]

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        per_class = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, per_class, strict=True))


def training_records(manifest: Manifest, classes: list[str] | None = None) -> tuple[list[Record], list[str]]:
    """The train split's real (``real`` or ``generated``, never ``synthetic``) rows of ``classes``.

    Returns:
        The rows and the class names in index order (sorted; all classes of those rows by default).

    Raises:
        ValueError: if the split has no such rows, or names a class it does not hold.
    """
    rows = [r for r in manifest.in_split("train") if r.source != "synthetic"]
    available = sorted({r.label for r in rows})
    if not rows:
        raise ValueError("the manifest's train split holds no real images to learn from")
    if classes is None:
        return rows, available
    missing = sorted(set(classes) - set(available))
    if missing:
        raise ValueError(f"classes {missing} have no real images in the train split; it holds {', '.join(available)}")
    chosen = sorted(classes)
    return [r for r in rows if r.label in chosen], chosen


def load_real_images(
    manifest: Manifest,
    records: list[Record],
    classes: list[str],
    image_size: int,
    crop: Literal["center", "none"] = "center",
    *,
    max_workers: int | None = None,
    use_cache: bool = True,
    cache_root: Path | None = None,
) -> RealImages:
    """``records`` at ``image_size`` (the project's resize and crop) as one uint8 tensor.

    The pixels come from the manifest's decoded-image cache (built on first use, under ``cache_root``,
    default ``settings.cache_root``); without it (``use_cache=False`` or over its disk budget) the
    images are decoded here in ``max_workers`` threads. Both give the same pixels.

    Raises:
        ValueError: if a record's label is not among ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({r.label for r in records} - index.keys())
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    labels = torch.tensor([index[r.label] for r in records], dtype=torch.long)
    cache = open_decoded_cache(manifest, image_size, crop, cache_root=cache_root) if use_cache and records else None
    if cache is not None:
        return RealImages(cache.eval_pixels(cache.rows_of(records)), labels, list(classes), list(records))
    transform = gan_preprocessing(image_size, crop).eval_transform()

    def decode(record: Record) -> Tensor:
        pixels = (transform(load_rgb(manifest.path_of(record))) + 1) * 127.5
        return pixels.round().clamp(0, 255).to(torch.uint8)

    with ThreadPoolExecutor(max_workers=max_workers or os.cpu_count() or 1) as pool:
        images = list(pool.map(decode, records))
    stacked = torch.stack(images) if images else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    return RealImages(stacked, labels, list(classes), list(records))


def to_gan_range(images: Tensor) -> Tensor:
    """uint8 pixels -> floats in [-1, 1]."""
    return images.float() / 127.5 - 1
