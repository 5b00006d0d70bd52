"""Per-class sample grids (PNG) written into a run's store while it trains and when it is evaluated."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import make_grid

from dermasynth.gan.networks import Generator
from dermasynth.gan.sampling import generate, png_bytes
from dermasynth.storage.base import ObjectStore

OVERVIEW_NAME = "_all"  # class labels never start with "_"
OVERVIEW_COLUMNS = 8


def grid_png(images: Tensor, columns: int | None = None) -> bytes:
    """uint8 images (N, 3, S, S) tiled into one PNG, ``columns`` per row (default: a square)."""
    if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty uint8 batch (N, 3, S, S), got {tuple(images.shape)} {images.dtype}")
    columns = columns or math.ceil(math.sqrt(images.shape[0]))
    return png_bytes(make_grid(images, nrow=columns, padding=2, pad_value=255))


def write_class_grids(
    store: ObjectStore,
    prefix: str,
    generator: Generator,
    classes: Sequence[str],
    seeds: Sequence[int],
    truncation: float = 1.0,
) -> list[str]:
    """Write ``{prefix}/{class}.png`` (one grid per class, the same latents for every class) and
    ``{prefix}/_all.png`` (one row per class, the first 8 latents), and return their keys."""
    keys: list[str] = []
    rows: list[Tensor] = []
    for index, label in enumerate(classes):
        images = torch.cat(list(generate(generator, [index] * len(seeds), seeds, truncation=truncation)))
        key = f"{prefix}/{label}.png"
        store.put_bytes(key, grid_png(images), "image/png")
        keys.append(key)
        rows.append(images[:OVERVIEW_COLUMNS])
    overview = f"{prefix}/{OVERVIEW_NAME}.png"
    store.put_bytes(overview, grid_png(torch.cat(rows), columns=min(OVERVIEW_COLUMNS, len(seeds))), "image/png")
    return [*keys, overview]
