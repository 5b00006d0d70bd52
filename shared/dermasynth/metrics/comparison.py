"""Is one arm better than another? A paired bootstrap of the difference, overall and per class.

Both arms predicted the same real test images. Each bootstrap resample draws test images
(stratified by class, with replacement) once and applies the *same* draw to both arms, so what the
two arms have in common (easy and hard images) cancels out and the interval of the difference is
much narrower than two separate intervals would suggest. With several seeds per arm the resample is
applied to every seed and the metric comes from the seeds' summed confusion matrices (pooled
predictions, as in :mod:`dermasynth.metrics.pooled`); the interval therefore measures the test
set's sampling error around the seeds' pooled result. With ``resample_seeds`` every resample also
draws each arm's seeds with replacement (independently for A and B), so the interval holds the
variation between training runs as well: "cannot be told apart" then also covers seed luck.

The verdict reads the 95% interval of ``A - B``: entirely above 0, "better"; entirely below 0,
"worse"; otherwise "cannot be told apart". Identical predictions give a difference of exactly 0 in
every resample, so they can never be called different. A class with fewer than :data:`MIN_SUPPORT`
test images gets the verdict "too few test images" instead. Each verdict is for one comparison at the
95% level, not adjusted for the number of classes and comparisons in a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from dermasynth.metrics.classification import CI_LEVEL, Interval, bootstrap_interval, metrics_from_confusion
from dermasynth.metrics.pooled import (
    CLASS_METRIC_KEYS,
    CLASS_METRICS,
    OVERALL_METRICS,
    check_predictions,
    pooled_confusions,
    resample_blocks,
    seed_counts,
    seed_rng,
)

Verdict = Literal["better", "worse", "cannot be told apart", "too few test images"]
MIN_SUPPORT = 10
"""Classes with fewer test images get no per-class verdict: a stratified resample always redraws the same
few images of the class, so its interval would hide how little they can tell."""


class Difference(BaseModel):
    """One metric of arm A against arm B on the same test images."""

    a: float
    b: float
    difference: float = Field(description="a - b")
    ci: Interval = Field(description="95% paired bootstrap interval of a - b")
    p_value: float = Field(description="two-sided bootstrap p-value of a - b = 0")
    verdict: Verdict


class PairedComparison(BaseModel):
    """Arm ``a`` against arm ``b``: differences overall and per class, with verdicts."""

    a: str
    b: str
    n: int = Field(description="test images")
    runs_a: int
    runs_b: int
    bootstrap: int
    resampled_seeds: bool = Field(default=False, description="the interval resamples each arm's seeds too")
    ci_level: float = CI_LEVEL
    overall: dict[str, Difference]
    per_class: dict[str, dict[str, Difference]] = Field(description="class -> accuracy/precision/recall/f1")

    def statement(self, metric: str = "balanced_accuracy", label: str | None = None) -> str:
        """The verdict in words, e.g. ``gan_sampler better than sampler: +0.031 [+0.012, +0.050]``.

        Raises:
            KeyError: for a metric or class the comparison does not hold.
        """
        diff = self.overall[metric] if label is None else self.per_class[label][metric]
        words = {
            "better": f"{self.a} better than {self.b}",
            "worse": f"{self.a} worse than {self.b}",
            "cannot be told apart": f"{self.a} and {self.b} cannot be told apart",
            "too few test images": f"too few test images to compare {self.a} and {self.b}",
        }[diff.verdict]
        return f"{words}: {diff.difference:+.3f} [{diff.ci.low:+.3f}, {diff.ci.high:+.3f}]"


def verdict_of(interval: Interval) -> Verdict:
    """``better`` if the interval of A - B lies above 0, ``worse`` if below, else ``cannot be told apart``."""
    if interval.low > 0:
        return "better"
    if interval.high < 0:
        return "worse"
    return "cannot be told apart"


def _p_value(draws: np.ndarray) -> float:
    finite = draws[np.isfinite(draws)]
    if not finite.size:
        return 1.0
    return float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))


def paired_bootstrap(
    truth: np.ndarray,
    predictions_a: Sequence[np.ndarray],
    predictions_b: Sequence[np.ndarray],
    classes: Sequence[str],
    *,
    names: tuple[str, str] = ("A", "B"),
    bootstrap: int = 2000,
    seed: int = 0,
    min_support: int = MIN_SUPPORT,
    resample_seeds: bool = False,
) -> PairedComparison:
    """Paired bootstrap of the difference between two arms evaluated on the same test images.

    Args:
        truth: true class indices of the test images ``(N,)``.
        predictions_a: predicted class indices ``(N,)`` of each run (seed) of arm A.
        predictions_b: the same for arm B (its runs need not pair with A's).
        classes: class names in index order.
        names: what to call the two arms in statements.
        bootstrap: paired resamples (at least 100 for a usable 95% interval).
        seed: seeds the resampling.
        min_support: classes with fewer test images get the verdict "too few test images".
        resample_seeds: also resample each arm's runs (seeds) in every resample.

    Returns:
        Differences ``A - B`` of accuracy, balanced accuracy and macro-F1, and per class of one-vs-rest
        accuracy, precision, recall and F1 (classes without test images are left out), with verdicts.

    Raises:
        ValueError: for fewer than 100 resamples, mismatched shapes or class indices out of range.
    """
    if bootstrap < 100:
        raise ValueError(f"bootstrap must be at least 100 resamples for a 95% interval, got {bootstrap}")
    k = len(classes)
    truth = np.asarray(truth, dtype=np.int64)
    runs_a = check_predictions(truth, predictions_a, k)
    runs_b = check_predictions(truth, predictions_b, k)
    everything = np.arange(truth.size)[None]
    point_a = metrics_from_confusion(pooled_confusions(truth, runs_a, everything, k))
    point_b = metrics_from_confusion(pooled_confusions(truth, runs_b, everything, k))
    draws: dict[str, list[np.ndarray]] = {name: [] for name in point_a}
    rng_a, rng_b = seed_rng(seed, 1), seed_rng(seed, 2)
    for idx in resample_blocks(truth, k, bootstrap, seed):
        counts_a = seed_counts(len(runs_a), rng_a, len(idx)) if resample_seeds else None
        counts_b = seed_counts(len(runs_b), rng_b, len(idx)) if resample_seeds else None
        values_a = metrics_from_confusion(pooled_confusions(truth, runs_a, idx, k, counts_a))
        values_b = metrics_from_confusion(pooled_confusions(truth, runs_b, idx, k, counts_b))
        for name, parts in draws.items():
            parts.append(values_a[name] - values_b[name])
    stacked = {name: np.concatenate(parts) for name, parts in draws.items()}

    support = np.bincount(truth, minlength=k)

    def difference(key: str, c: int | None = None) -> Difference:
        def pick(array: np.ndarray) -> np.ndarray:
            return array if c is None else array[:, c]

        a, b = float(pick(point_a[key])[0]), float(pick(point_b[key])[0])
        interval = bootstrap_interval(pick(stacked[key]))
        verdict = "too few test images" if c is not None and support[c] < min_support else verdict_of(interval)
        return Difference(
            a=a, b=b, difference=a - b, ci=interval, p_value=_p_value(pick(stacked[key])), verdict=verdict
        )

    return PairedComparison(
        a=names[0],
        b=names[1],
        n=int(truth.size),
        runs_a=len(runs_a),
        runs_b=len(runs_b),
        bootstrap=bootstrap,
        resampled_seeds=resample_seeds,
        overall={name: difference(name) for name in OVERALL_METRICS},
        per_class={
            label: {m: difference(CLASS_METRIC_KEYS[m], c) for m in CLASS_METRICS}
            for c, label in enumerate(classes)
            if support[c]
        },
    )
