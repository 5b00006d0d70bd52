"""Filtered synthesis: keep only generated images a real-trained classifier recognises and that copy no real image.

A generated image of class *c* is kept when

1. a classifier trained on the **real** images (a run folder: ``dermasynth train`` or an experiment's
   sampler run) gives class *c* a probability of at least ``min_confidence``, and
2. it passes the near-copy check of :mod:`dermasynth.gan.quality`: it is not closer (pixel RMSE at the
   GAN's resolution) to a real training image of its class than almost any two different real lesions
   are to each other (the ``near_copy_quantile`` of those distances) while that image's lesion is much
   nearer than every other lesion (ratio under ``near_copy_ratio``).

:class:`ImageFilter` scores batches of candidates; :mod:`dermasynth.gan.synthesis` draws candidates
(seeds in order) until each class has the images it needs or ``max_candidates`` times that many were
tried, and records every kept image's confidence in the manifest (``filter_confidence``) and the kept
fraction per class in ``synthesis.json`` (:class:`FilterReport`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor

from dermasynth.classifier.checkpoint import TrainedModel
from dermasynth.data.manifest import Manifest
from dermasynth.gan.real_images import load_real_images, training_records

NEAR_COPY_QUANTILE = 0.01
NEAR_COPY_RATIO = 0.5
MAX_REAL_FOR_THRESHOLD = 1000  # real images per class that set the near-copy threshold (seeded subset)


class ClassFilterResult(BaseModel):
    """What the filter did for one class."""

    needed: int = Field(description="images the plan asked for")
    candidates: int = Field(description="generated images scored")
    kept: int
    rejected_confidence: int = Field(description="below min_confidence")
    rejected_near_copy: int = Field(description="confident enough, but a near-copy of a real image")
    kept_fraction: float | None = Field(
        description="candidates that passed both tests / candidates scored (None: none scored)"
    )
    mean_kept_confidence: float | None


class FilterReport(BaseModel):
    """``filter`` in ``synthesis.json``: the filter's rule and what it kept per class."""

    classifier: str = Field(description="the real-trained classifier that scored the candidates")
    classifier_epoch: int
    min_confidence: float
    max_candidates: float = Field(description="candidates tried per needed image, at most")
    near_copy_threshold: float = Field(description="pixel RMSE under which an image may be a near-copy")
    near_copy_ratio: float
    classes: dict[str, ClassFilterResult]

    @property
    def shortfall(self) -> dict[str, int]:
        """Classes that got fewer images than asked for, and by how many."""
        return {c: r.needed - r.kept for c, r in self.classes.items() if r.kept < r.needed}


@dataclass(frozen=True)
class Verdicts:
    """The filter's decision on a batch of candidates."""

    confidence: Tensor  # (B,) probability of the intended class
    confident: Tensor  # (B,) bool
    near_copy: Tensor  # (B,) bool

    @property
    def kept(self) -> Tensor:
        return self.confident & ~self.near_copy


class ImageFilter:
    """Scores generated uint8 images (B, 3, S, S) against their intended classes.

    Args:
        classifier: a classifier trained on the real images (:func:`~dermasynth.classifier.checkpoint.load_trained`).
        manifest: the real dataset; its train split's real images are the near-copy reference.
        image_size: the generator's resolution (the near-copy check compares at it).
        min_confidence: in [0, 1]; an image is confident when p(intended class) >= this.
        classes: the classes that will be filtered (only their real images are decoded).
        description: names the classifier in reports (e.g. its run folder).

    Raises:
        ValueError: if the classifier does not know a class to filter, or no class has two real lesions.
    """

    def __init__(
        self,
        classifier: TrainedModel,
        manifest: Manifest,
        image_size: int,
        min_confidence: float,
        classes: list[str],
        description: str,
        *,
        crop: str = "center",
        near_copy_quantile: float = NEAR_COPY_QUANTILE,
        near_copy_ratio: float = NEAR_COPY_RATIO,
        seed: int = 0,
    ) -> None:
        from dermasynth.gan.quality import near_copy_threshold  # not at import: quality loads the training engine

        if not 0 <= min_confidence <= 1:
            raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
        unknown = sorted(set(classes) - set(classifier.classes))
        if unknown:
            raise ValueError(
                f"the filter classifier does not know the classes {unknown}; it was trained on "
                f"{', '.join(classifier.classes)}"
            )
        self.classifier, self.min_confidence, self.description = classifier, min_confidence, description
        self.near_copy_ratio = near_copy_ratio
        pre = classifier.preprocessing
        self._size = pre.image_size
        self._mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(pre.std).view(1, 3, 1, 1)
        records, available = training_records(manifest)
        chosen = sorted(set(classes) & set(available))
        records = [r for r in records if r.label in chosen]
        real = load_real_images(manifest, records, chosen, image_size, "center" if crop == "center" else "none")
        self._real: dict[str, tuple[Tensor, list[str]]] = {}
        rng = torch.Generator().manual_seed(seed)
        subset: list[Tensor] = []
        for index, label in enumerate(chosen):
            rows = (real.labels == index).nonzero().flatten()
            self._real[label] = (real.images[rows], [real.records[i].lesion_id for i in rows.tolist()])
            subset.append(rows[torch.randperm(rows.numel(), generator=rng)[:MAX_REAL_FOR_THRESHOLD]])
        picked = torch.cat(subset) if subset else torch.empty(0, dtype=torch.long)
        self.near_copy_threshold = near_copy_threshold(
            real.images[picked],
            [real.records[i].lesion_id for i in picked.tolist()],
            real.labels[picked],
            near_copy_quantile,
        )

    def confidence(self, images: Tensor, label: str) -> Tensor:
        """p(``label``) the classifier gives each uint8 image, fed exactly as in its training (resize, normalize)."""
        x = images.float() / 255
        if x.shape[-1] != self._size or x.shape[-2] != self._size:
            x = F.interpolate(x, size=(self._size, self._size), mode="bilinear", antialias=True, align_corners=False)
        probabilities = self.classifier.probabilities((x - self._mean) / self._std).cpu()
        return probabilities[:, self.classifier.classes.index(label)]

    def near_copies(self, images: Tensor, label: str) -> Tensor:
        """Whether each image is a near-copy of a real training image of ``label`` (False without real images)."""
        from dermasynth.gan.quality import nearest_real

        if label not in self._real or self._real[label][0].shape[0] == 0:
            return torch.zeros(images.shape[0], dtype=torch.bool)
        real, lesions = self._real[label]
        nearest, _, ratio = nearest_real(images, real, lesions)
        single = not bool(ratio.isfinite().any())  # one real lesion: the distance alone decides
        close = nearest < self.near_copy_threshold
        return close if single else close & (ratio < self.near_copy_ratio)

    def judge(self, images: Tensor, label: str) -> Verdicts:
        """Confidence, the threshold test and the near-copy test for a batch of images of one class."""
        confidence = self.confidence(images, label)
        return Verdicts(confidence, confidence >= self.min_confidence, self.near_copies(images, label))
