"""Feature spaces for the GAN's quality metrics that need nothing downloaded.

FID and KID are usually computed on Inception-v3 features, whose weights cannot be fetched here.
DermaSynth uses the pooled penultimate layer of a classifier trained on the *real* training images of
the same dataset (:mod:`dermasynth.classifier`), either a run the user names or one trained once and
cached inside the GAN run (``feature_classifier/``). Figures are comparable only within one feature
space, so the report names it.

A :data:`FeatureExtractor` takes float images ``(N, 3, S, S)`` in [0, 1] at the GAN's resolution and
returns ``(N, D)`` features on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dermasynth.classifier.checkpoint import TrainedModel, load_trained
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.data.manifest import Manifest
from dermasynth.progress import ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore
from dermasynth.storage.prefixed import PrefixedStore

FeatureExtractor = Callable[[Tensor], Tensor]
FEATURE_RUN = "feature_classifier"


@dataclass(frozen=True)
class FeatureSpace:
    """A feature extractor and the sentence that says which space it is (written into reports)."""

    extract: FeatureExtractor
    description: str


def classifier_feature_space(trained: TrainedModel, source: str) -> FeatureSpace:
    """The penultimate layer of a trained classifier, fed exactly as in its training (resize, normalize).

    Args:
        trained: a classifier loaded with :func:`~dermasynth.classifier.checkpoint.load_trained`.
        source: where it came from, for the description (e.g. a run folder).
    """
    pre = trained.preprocessing
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)

    def extract(images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[-1] != pre.image_size or x.shape[-2] != pre.image_size:
            x = F.interpolate(
                x, size=(pre.image_size, pre.image_size), mode="bilinear", antialias=True, align_corners=False
            )
        return trained.features((x - mean) / std).cpu()

    with torch.no_grad():
        dim = int(extract(torch.zeros(1, 3, pre.image_size, pre.image_size)).shape[1])
    accuracy = trained.metrics.get("val_balanced_accuracy")
    quality = f", val balanced accuracy {accuracy:.3f}" if isinstance(accuracy, float) else ""
    description = (
        f"penultimate layer ({dim}-d pooled features) of a {trained.config.model} classifier at "
        f"{pre.image_size} px trained on the real training images ({source}, epoch {trained.epoch}"
        f"{quality})"
    )
    return FeatureSpace(extract, description)


def default_feature_config(image_size: int) -> TrainConfig:
    """A small classifier for the feature space: ResNet-18 from scratch at the GAN's resolution."""
    return TrainConfig(
        model="resnet18",
        image_size=max(image_size, 32),
        epochs=8,
        batch_size=64,
        lr=1e-3,
        balance="sampler",
        num_workers=0,
    )


def feature_classifier(
    gan: ObjectStore,
    manifest: Manifest,
    image_size: int,
    config: TrainConfig | None = None,
    progress: ProgressCallback = ignore_progress,
    device: str | torch.device = "cpu",
) -> FeatureSpace:
    """Train (once; cached under ``feature_classifier/`` in the GAN store) a classifier on the manifest's
    real images only, and return its feature space.

    Args:
        gan: the GAN run's store; the classifier run is kept under ``feature_classifier/``.
        manifest: the dataset; synthetic rows are left out, the val split picks the best epoch.
        image_size: the GAN's resolution (the default classifier's input size).
        config: the classifier's options (default: :func:`default_feature_config`).
        progress: receives the classifier's training progress.
        device: where features are computed.
    """
    real = Manifest([r for r in manifest.records if r.source != "synthetic"], manifest.root)
    store = PrefixedStore(gan, FEATURE_RUN)
    fit(config or default_feature_config(image_size), real, store, progress, resume=True)
    return classifier_feature_space(load_trained(store, "best", device), f"{FEATURE_RUN}/ in the GAN folder")
