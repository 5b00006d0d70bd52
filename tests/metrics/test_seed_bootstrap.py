"""The seed-level (two-level) bootstrap: seeds that disagree widen the intervals; identical seeds do not."""

from __future__ import annotations

import numpy as np

from dermasynth.metrics.comparison import paired_bootstrap
from dermasynth.metrics.pooled import pooled_metrics

CLASSES = ["a", "b", "c"]


def _truth(n_per_class: int = 60) -> np.ndarray:
    return np.repeat(np.arange(3), n_per_class)


def _predict(truth: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Predictions right on ``accuracy`` of the images (a seeded choice), wrong (next class) elsewhere."""
    rng = np.random.default_rng(seed)
    right = rng.random(truth.size) < accuracy
    return np.where(right, truth, (truth + 1) % 3)


def _width(estimate: object) -> float:
    ci = estimate.ci  # type: ignore[attr-defined]
    return float(ci.high - ci.low)


def test_identical_seeds_give_the_same_interval_with_or_without_seed_resampling() -> None:
    truth = _truth()
    one = _predict(truth, 0.7, 0)
    plain = pooled_metrics(truth, [one, one, one], CLASSES, bootstrap=400, seed=3)
    seeds = pooled_metrics(truth, [one, one, one], CLASSES, bootstrap=400, seed=3, resample_seeds=True)
    assert seeds.resampled_seeds and not plain.resampled_seeds
    assert seeds.overall["balanced_accuracy"].ci == plain.overall["balanced_accuracy"].ci


def test_seeds_that_disagree_widen_the_interval() -> None:
    truth = _truth()
    # planted: one seed nearly perfect, one at chance-like level, one in between; pooled like a 0.6 arm
    disagree = [_predict(truth, 0.95, 1), _predict(truth, 0.3, 2), _predict(truth, 0.55, 3)]
    plain = pooled_metrics(truth, disagree, CLASSES, bootstrap=600, seed=0)
    seeds = pooled_metrics(truth, disagree, CLASSES, bootstrap=600, seed=0, resample_seeds=True)
    assert seeds.overall["balanced_accuracy"].value == plain.overall["balanced_accuracy"].value  # same point
    assert _width(seeds.overall["balanced_accuracy"]) > 2 * _width(plain.overall["balanced_accuracy"])
    assert _width(seeds.per_class["a"]["recall"]) > _width(plain.per_class["a"]["recall"])


def test_a_comparison_that_only_looks_better_because_of_one_lucky_seed_is_not_called_better() -> None:
    truth = _truth()
    baseline = [_predict(truth, 0.6, s) for s in (10, 11, 12)]
    # arm A: two seeds like the baseline, one lucky seed far better: pooled, A looks better
    lucky = [_predict(truth, 0.6, 20), _predict(truth, 0.6, 21), _predict(truth, 0.99, 22)]
    plain = paired_bootstrap(truth, lucky, baseline, CLASSES, bootstrap=600, seed=0)
    seeds = paired_bootstrap(truth, lucky, baseline, CLASSES, bootstrap=600, seed=0, resample_seeds=True)
    assert plain.overall["balanced_accuracy"].verdict == "better"
    assert seeds.resampled_seeds
    assert _width(seeds.overall["balanced_accuracy"]) > _width(plain.overall["balanced_accuracy"])
    assert seeds.overall["balanced_accuracy"].verdict == "cannot be told apart"


def test_consistent_seeds_keep_a_real_difference() -> None:
    truth = _truth()
    baseline = [_predict(truth, 0.55, s) for s in (30, 31, 32)]
    better = [_predict(truth, 0.85, s) for s in (40, 41, 42)]
    seeds = paired_bootstrap(truth, better, baseline, CLASSES, bootstrap=600, seed=0, resample_seeds=True)
    assert seeds.overall["balanced_accuracy"].verdict == "better"
