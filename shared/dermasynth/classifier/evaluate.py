"""Evaluate one training run on one split of real images, and store its report and figures in the run."""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.classifier.engine import evaluate
from dermasynth.data.dataset import EvalBatches, ManifestDataset
from dermasynth.data.decoded_cache import open_decoded_cache
from dermasynth.data.manifest import SPLITS, Manifest
from dermasynth.metrics.classification import ClassificationMetrics, classification_metrics
from dermasynth.metrics.figures import confusion_matrix_png, per_class_png
from dermasynth.storage.base import ObjectStore

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
CONFUSION_NAME = "confusion_matrix.png"
PER_CLASS_NAME = "per_class.png"
PREDICTIONS_NAME = "predictions.npz"


@dataclass(frozen=True)
class SplitPredictions:
    """A model's class probabilities for every evaluated image (``predictions.npz``), for paired comparisons."""

    images: list[str]
    targets: np.ndarray
    probabilities: np.ndarray
    classes: list[str]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            images=np.array(self.images, dtype=str),
            targets=self.targets,
            probabilities=self.probabilities,
            classes=np.array(self.classes, dtype=str),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SplitPredictions:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return cls(
                images=stored["images"].tolist(),
                targets=stored["targets"].astype(np.int64),
                probabilities=stored["probabilities"],
                classes=stored["classes"].tolist(),
            )


def load_predictions(run: ObjectStore, prefix: str = "") -> SplitPredictions:
    """The predictions :func:`evaluate_run` kept (``save_predictions=True``) under ``prefix`` of ``run``.

    Raises:
        ObjectNotFound: if that evaluation kept none.
    """
    return SplitPredictions.from_bytes(run.get_bytes(_base(prefix) + PREDICTIONS_NAME))


def _base(prefix: str) -> str:
    return f"{prefix.strip('/')}/" if prefix.strip("/") else ""


class EvaluationReport(ClassificationMetrics):
    """The metrics of one run on one split, and what was evaluated (``metrics.json``)."""

    split: str
    checkpoint: Literal["best", "latest"]
    epoch: int = Field(description="the training epoch the evaluated weights come from")
    model: str
    image_size: int
    tta: bool
    sources: dict[str, int] = Field(description="evaluated images by source (real/generated)")
    excluded_synthetic: int = Field(description="synthetic rows of the split left out (only train can hold them)")


def evaluate_run(
    run: ObjectStore,
    manifest: Manifest,
    split: str = "test",
    *,
    tta: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    which: Literal["best", "latest"] = "best",
    prefix: str = "",
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    save_predictions: bool = False,
) -> EvaluationReport:
    """Evaluate a run's model on the real (or generated demo) images of ``split``; never on synthetic ones.

    Writes ``metrics.json``, ``confusion_matrix.png`` and ``per_class.png`` to ``run`` under ``prefix``
    (e.g. ``eval/test``; default: the run's top level).

    Args:
        run: the training run's store (holding ``best.pth``/``checkpoint.pth``).
        manifest: the dataset to evaluate on; its labels must be among the model's classes.
        split: ``test`` (default), ``val`` or ``train``.
        tta: average predictions over the 8 flips and right-angle rotations.
        bootstrap: resamples for the 95% intervals (0: none).
        seed: seeds the bootstrap.
        which: ``best`` or ``latest`` checkpoint.
        prefix: where in ``run`` to write the report and figures.
        device: where to run the model.
        batch_size: images per forward pass.
        num_workers: data-loading processes.
        save_predictions: also write ``predictions.npz`` (image paths, targets, probabilities; see
            :func:`load_predictions`), what paired comparisons between runs need.

    Raises:
        ValueError: an unknown split, a split without real images, labels the model does not know.
        ObjectNotFound: if the run has no such checkpoint.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    rows = manifest.in_split(split)
    records = [r for r in rows if r.source != "synthetic"]
    excluded = len(rows) - len(records)
    if excluded:
        logger.warning("left %d synthetic images of split %s out of the evaluation", excluded, split)
    if not records:
        raise ValueError(f"split {split!r} holds no real or generated images to evaluate on")
    trained = load_trained(run, which, device=device)
    dataset = ManifestDataset(manifest, records, trained.preprocessing.eval_transform(), trained.classes)
    pre = trained.preprocessing
    cache = open_decoded_cache(manifest, pre.image_size, pre.crop, build=False)  # the one training left, if any
    if cache is not None:  # the same pixels, without decoding them again
        normalize = pre.pixel_normalizer().to(trained.device)
        targets, probs = evaluate(
            trained.model,
            EvalBatches(cache, records, dataset.targets, batch_size),
            trained.device,
            tta=tta,
            prepare=lambda batch, _: (normalize(batch[0].to(trained.device)), batch[1]),
        )
    else:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
        targets, probs = evaluate(trained.model, loader, trained.device, tta=tta)
    metrics = classification_metrics(targets, probs, trained.classes, bootstrap=bootstrap, seed=seed)
    report = EvaluationReport(
        **metrics.model_dump(),
        split=split,
        checkpoint=which,
        epoch=trained.epoch,
        model=trained.config.model,
        image_size=trained.preprocessing.image_size,
        tta=tta,
        sources=dict(sorted(Counter(r.source for r in records).items())),
        excluded_synthetic=excluded,
    )
    base = _base(prefix)
    if save_predictions:
        kept = SplitPredictions([r.image for r in records], targets, probs, trained.classes)
        run.put_bytes(base + PREDICTIONS_NAME, kept.to_bytes())
    title = f"{trained.config.model}, {split} split ({report.n} images)"
    run.put_bytes(base + METRICS_NAME, report.model_dump_json(indent=2).encode(), content_type="application/json")
    run.put_bytes(base + CONFUSION_NAME, confusion_matrix_png(report, title), content_type="image/png")
    run.put_bytes(base + PER_CLASS_NAME, per_class_png(report, title), content_type="image/png")
    return report
