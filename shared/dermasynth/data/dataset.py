"""A torch ``Dataset`` over one split of a manifest."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

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
