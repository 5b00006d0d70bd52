"""Metrics of one arm pooled over its seeds, with bootstrap confidence intervals over the test images.

An arm trained with several seeds has one prediction per test image and seed. Its *pooled* metrics
come from the sum of the seeds' confusion matrices (every seed's predictions on the same images);
the 95% interval resamples the test images (stratified by class, as in
:mod:`dermasynth.metrics.classification`) and applies each resample to every seed at once, so it
measures how much the figure depends on which test images were drawn. The spread between seeds
(mean and standard deviation of the per-seed figures) is reported beside it.

With ``resample_seeds`` the bootstrap is two-level: every resample also draws the arm's seeds with
replacement (as many as it has) and pools the drawn seeds' confusion matrices, so the interval also
holds the variation between training runs: seeds that disagree widen it, identical seeds leave it as
it was. With one seed both are the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from pydantic import BaseModel, Field

from dermasynth.metrics.classification import (
    Interval,
    bootstrap_interval,
    confusion_stack,
    metrics_from_confusion,
    stratified_resamples,
)

OVERALL_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
CLASS_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")
# per-class metric -> its key in :func:`~dermasynth.metrics.classification.metrics_from_confusion`
CLASS_METRIC_KEYS: dict[str, str] = {
    "accuracy": "class_accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
}
CHUNK = 100  # resamples per vectorised block


class Estimate(BaseModel):
    """One figure: pooled over seeds, its bootstrap interval, and its spread between seeds."""

    value: float = Field(description="from the seeds' summed confusion matrices")
    ci: Interval | None = Field(default=None, description="95% bootstrap interval over test images")
    seed_mean: float
    seed_sd: float | None = Field(default=None, description="standard deviation between seeds (None: one seed)")


class PooledMetrics(BaseModel):
    """An arm's metrics on the test images, pooled over its seeds (``runs``)."""

    runs: int
    n: int = Field(description="test images (each predicted once per run)")
    classes: list[str]
    support: dict[str, int]
    overall: dict[str, Estimate]
    per_class: dict[str, dict[str, Estimate]] = Field(description="class -> accuracy/precision/recall/f1")
    confusion_matrix: list[list[int]] = Field(description="summed over runs; rows true, columns predicted")
    bootstrap: int
    resampled_seeds: bool = Field(default=False, description="the intervals resample the seeds too")


def check_predictions(truth: np.ndarray, predictions: Sequence[np.ndarray], k: int) -> np.ndarray:
    """The runs' predicted class indices as one ``(S, N)`` array, after checking their shapes and range.

    Raises:
        ValueError: no runs, a run with another number of images than ``truth``, or indices outside ``0..K-1``.
    """
    if not len(predictions):
        raise ValueError("predictions must hold at least one run's predicted classes")
    stacked = np.stack([np.asarray(p) for p in predictions])
    if stacked.shape[1:] != truth.shape:
        raise ValueError(
            f"every run must predict the {truth.size} test images once; got shapes {[np.shape(p) for p in predictions]}"
        )
    for name, values in (("truth", truth), ("predictions", stacked)):
        if values.size and (values.min() < 0 or values.max() >= k):
            raise ValueError(f"{name} hold class indices {values.min()}..{values.max()}; accepted: 0..{k - 1}")
    return stacked.astype(np.int64)


def pooled_confusions(
    truth: np.ndarray, predictions: np.ndarray, idx: np.ndarray, k: int, counts: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrices ``(B, K, K)`` of resamples ``idx`` ``(B, N)``, summed over the runs ``(S, N)``.

    ``counts`` ``(B, S)``: how often each resample drew each run (a seed-level resample); default once each.
    """
    total = np.zeros((len(idx), k, k), dtype=np.int64)
    for s, run in enumerate(predictions):
        matrices = confusion_stack(truth[idx], run[idx], k)
        total += matrices if counts is None else counts[:, s, None, None] * matrices
    return total


def seed_counts(runs: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, runs)``: how often each of ``runs`` seeds is drawn when ``runs`` are drawn with replacement."""
    return rng.multinomial(runs, np.full(runs, 1.0 / runs), size=size).astype(np.int64)


def seed_rng(seed: int, stream: int) -> np.random.Generator:
    """The seed draws' own random stream (the test-image draws stay those of the plain bootstrap)."""
    return np.random.default_rng([seed, stream])


def resample_blocks(truth: np.ndarray, k: int, bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Stratified resamples of the test images in blocks of at most :data:`CHUNK`, ``bootstrap`` in all."""
    rng = np.random.default_rng(seed)
    remaining = bootstrap
    while remaining:
        b = min(CHUNK, remaining)
        remaining -= b
        yield stratified_resamples(truth, k, b, rng)


def pooled_metrics(
    truth: np.ndarray,
    predictions: Sequence[np.ndarray],
    classes: Sequence[str],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    resample_seeds: bool = False,
) -> PooledMetrics:
    """Overall and per-class metrics of an arm's runs on the same test images, pooled over the runs.

    Args:
        truth: true class indices of the test images ``(N,)``.
        predictions: one array of predicted class indices ``(N,)`` per run (seed).
        classes: class names in index order.
        bootstrap: stratified resamples of the test images for the 95% intervals (0: none).
        seed: seeds the resampling.
        resample_seeds: also resample the runs in every resample (two-level bootstrap, see the module).

    Raises:
        ValueError: on mismatched shapes or class indices out of range.
    """
    k = len(classes)
    truth = np.asarray(truth, dtype=np.int64)
    runs = check_predictions(truth, predictions, k)
    per_run = metrics_from_confusion(confusion_stack(np.broadcast_to(truth, runs.shape), runs, k))
    pooled_cm = pooled_confusions(truth, runs, np.arange(truth.size)[None], k)
    point = metrics_from_confusion(pooled_cm)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in point}
    seeds_rng = seed_rng(seed, 1)
    for idx in resample_blocks(truth, k, bootstrap, seed):
        counts = seed_counts(len(runs), seeds_rng, len(idx)) if resample_seeds else None
        values = metrics_from_confusion(pooled_confusions(truth, runs, idx, k, counts))
        for name, parts in draws.items():
            parts.append(values[name])
    stacked = {name: np.concatenate(parts) for name, parts in draws.items()} if bootstrap else {}
    support = np.bincount(truth, minlength=k)

    def estimate(key: str, c: int | None = None) -> Estimate:
        def pick(array: np.ndarray) -> np.ndarray:
            return array if c is None else array[:, c]

        seeds = pick(per_run[key])
        return Estimate(
            value=float(pick(point[key])[0]),
            ci=bootstrap_interval(pick(stacked[key])) if stacked else None,
            seed_mean=float(np.mean(seeds)),
            seed_sd=float(np.std(seeds, ddof=1)) if len(seeds) > 1 else None,
        )

    return PooledMetrics(
        runs=len(runs),
        n=int(truth.size),
        classes=list(classes),
        support={name: int(support[c]) for c, name in enumerate(classes)},
        overall={name: estimate(name) for name in OVERALL_METRICS},
        per_class={
            name: {m: estimate(CLASS_METRIC_KEYS[m], c) for m in CLASS_METRICS}
            for c, name in enumerate(classes)
            if support[c]
        },
        confusion_matrix=pooled_cm[0].tolist(),
        bootstrap=bootstrap,
        resampled_seeds=resample_seeds and bootstrap > 0,
    )
