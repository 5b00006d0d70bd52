"""Data of one split of a manifest: a per-image ``Dataset``, and batch iterables over a decoded cache."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dermasynth.data.decoded_cache import DecodedImages
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest, Record


class ManifestDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images of the given records as (tensor, class index) pairs.

    Args:
        manifest: the dataset the records come from (resolves their paths).
        records: the rows to serve, e.g. ``manifest.in_split("train")``.
        classes: class names in index order; defaults to the manifest's.
        transform: PIL image -> tensor, e.g. ``Preprocessing.eval_transform()``.
    """

    def __init__(
        self,
        manifest: Manifest,
        records: Sequence[Record],
        transform: Callable[[Image.Image], torch.Tensor],
        classes: Sequence[str] | None = None,
    ) -> None:
        self.manifest = manifest
        self.records = list(records)
        self.classes = list(classes or manifest.classes)
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted({r.label for r in self.records} - index.keys())
        if unknown:
            raise ValueError(f"labels {unknown} are not among the model's classes {self.classes}")
        self.targets = [index[r.label] for r in self.records]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.manifest.path_of(self.records[i]))
        return self.transform(image), self.targets[i]


class CachedBatches:
    """Training batches from a decoded cache, in a sampler's order: no decoding, no worker processes.

    Yields ``(pixels, extents, targets)``, and each image's loss weight when ``weights`` are given: the
    train-geometry uint8 pixels ``(B, 3, S, W)`` with each
    image's (height, width) on the canvas when ``augmented``, else the eval-geometry pixels
    ``(B, 3, S, S)`` and ``None``. Augmentation and normalization happen on the training device
    (:class:`~dermasynth.data.transforms.BatchAugment`, ``PixelNormalize``).

    Args:
        cache: the opened cache of the manifest the records come from.
        records: the rows to serve (the sampler's indices point into them).
        targets: class index of each record.
        sampler: yields indices into ``records`` (weighted, shuffled or distributed).
        batch_size: images per batch.
        drop_last: drop a last, smaller batch (as ``DataLoader`` does).
        augmented: serve train geometry (for augmentation) rather than eval geometry.
        device: keep the pixels there (e.g. a GPU with room for them) and gather batches there.
        weights: a loss weight per record; when given, each batch also carries its images' weights.
    """

    def __init__(
        self,
        cache: DecodedImages,
        records: Sequence[Record],
        targets: Sequence[int],
        sampler: Iterable[int],
        batch_size: int,
        *,
        drop_last: bool = True,
        augmented: bool = True,
        device: torch.device | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.rows = cache.rows_of(records)
        self.weights = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        self.cache = cache
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.augmented = augmented
        self.resident: torch.Tensor | None = None
        if device is not None:  # the whole array on the device; batches are gathered there
            array = cache.train if augmented else cache.eval
            self.resident = torch.from_numpy(np.ascontiguousarray(array)).to(device)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, ...]]:
        indices = torch.as_tensor(list(self.sampler), dtype=torch.long)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chosen = indices[start : start + self.batch_size]
            weights = () if self.weights is None else (self.weights[chosen],)
            yield (*self._pixels(chosen), self.targets[chosen], *weights)

    def _pixels(self, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self.rows[chosen.numpy()]
        extents = torch.from_numpy(self.cache.extents[rows]) if self.augmented else None  # on the CPU, for sampling
        if self.resident is not None:
            pixels = self.resident[torch.from_numpy(rows).to(self.resident.device)].permute(0, 3, 1, 2)
            return pixels, extents
        if self.augmented:
            return self.cache.train_batch(rows)
        return self.cache.eval_batch(rows), None


class EvalBatches:
    """Eval-geometry uint8 batches ``(pixels (B, 3, S, S), targets)`` of ``records`` in order, from a cache."""

    def __init__(
        self, cache: DecodedImages, records: Sequence[Record], targets: Sequence[int], batch_size: int
    ) -> None:
        self.cache = cache
        self.rows = cache.rows_of(records)
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.rows), self.batch_size):
            stop = start + self.batch_size
            yield self.cache.eval_batch(self.rows[start:stop]), self.targets[start:stop]
