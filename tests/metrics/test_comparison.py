from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from dermasynth.metrics.classification import Interval
from dermasynth.metrics.comparison import paired_bootstrap, verdict_of

CLASSES = ["akiec", "mel", "nv"]
TRUTH = np.repeat([0, 1, 2], [30, 40, 200])


def _noisy(truth: np.ndarray, error_rate: float, seed: int, only: int | None = None) -> np.ndarray:
    """Predictions wrong with probability ``error_rate`` (only on class ``only`` when given)."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(truth.size) < error_rate
    if only is not None:
        wrong &= truth == only
    return np.where(wrong, (truth + rng.integers(1, 3, truth.size)) % 3, truth)


def test_a_planted_difference_is_flagged_both_ways() -> None:
    perfect, noisy = TRUTH.copy(), _noisy(TRUTH, 0.4, 0)
    result = paired_bootstrap(TRUTH, [perfect], [noisy], CLASSES, names=("gan", "sampler"), bootstrap=500)
    assert result.overall["balanced_accuracy"].verdict == "better"
    assert result.overall["balanced_accuracy"].b == pytest.approx(balanced_accuracy_score(TRUTH, noisy))
    assert result.overall["macro_f1"].a == pytest.approx(1.0)
    assert all(result.per_class[c]["f1"].verdict == "better" for c in CLASSES)
    assert result.statement().startswith("gan better than sampler: +")
    reverse = paired_bootstrap(TRUTH, [noisy], [perfect], CLASSES, names=("sampler", "gan"), bootstrap=500)
    assert reverse.overall["balanced_accuracy"].verdict == "worse"
    assert reverse.statement(label="mel", metric="f1").startswith("sampler worse than gan: -")


def test_a_difference_in_one_rare_class_is_flagged_in_that_class_only() -> None:
    base = _noisy(TRUTH, 0.15, 1)
    crippled = np.where(TRUTH == 0, _noisy(TRUTH, 0.9, 2, only=0), base)
    result = paired_bootstrap(TRUTH, [base], [crippled], CLASSES, bootstrap=1000, seed=3)
    assert result.per_class["akiec"]["recall"].verdict == "better"
    assert result.per_class["akiec"]["f1"].verdict == "better"
    assert result.per_class["nv"]["recall"].verdict == "cannot be told apart"
    assert result.per_class["nv"]["recall"].difference == 0.0


def test_identical_predictions_are_never_told_apart() -> None:
    runs = [_noisy(TRUTH, 0.3, seed) for seed in range(3)]
    result = paired_bootstrap(TRUTH, runs, [r.copy() for r in runs], CLASSES, bootstrap=300)
    differences = [*result.overall.values(), *(d for per in result.per_class.values() for d in per.values())]
    assert all(d.verdict == "cannot be told apart" for d in differences)
    assert all(d.difference == 0 and d.ci.low == d.ci.high == 0 and d.p_value == 1 for d in differences)
    assert result.runs_a == result.runs_b == 3


def test_equally_good_arms_are_rarely_told_apart() -> None:
    # The paired test's size: two arms with the same error rate (independent errors) should be called
    # different in about 5% of trials; an interval that ignores the pairing or the resampling would not be.
    flagged = 0
    for trial in range(40):
        a, b = _noisy(TRUTH, 0.3, 100 + trial), _noisy(TRUTH, 0.3, 200 + trial)
        result = paired_bootstrap(TRUTH, [a], [b], CLASSES, bootstrap=300, seed=trial)
        flagged += result.overall["macro_f1"].verdict != "cannot be told apart"
    assert flagged <= 6


def test_pooled_seeds_and_point_estimates() -> None:
    a_runs = [_noisy(TRUTH, 0.1, s) for s in range(2)]
    b_runs = [_noisy(TRUTH, 0.3, 10 + s) for s in range(3)]
    result = paired_bootstrap(TRUTH, a_runs, b_runs, CLASSES, bootstrap=200)
    pooled = f1_score(np.tile(TRUTH, 3), np.concatenate(b_runs), average="macro")
    assert result.overall["macro_f1"].b == pytest.approx(pooled)
    assert result.runs_a == 2 and result.runs_b == 3 and result.n == TRUTH.size


def test_verdicts_and_bad_input() -> None:
    assert verdict_of(Interval(low=0.01, high=0.2)) == "better"
    assert verdict_of(Interval(low=-0.2, high=-0.01)) == "worse"
    assert verdict_of(Interval(low=-0.01, high=0.2)) == "cannot be told apart"
    with pytest.raises(ValueError, match="at least 100 resamples"):
        paired_bootstrap(TRUTH, [TRUTH], [TRUTH], CLASSES, bootstrap=10)
    with pytest.raises(ValueError, match="predict the 270 test images once"):
        paired_bootstrap(TRUTH, [TRUTH], [TRUTH[:5]], CLASSES, bootstrap=100)


def test_classes_with_few_test_images_get_no_verdict() -> None:
    truth = np.repeat([0, 1, 2], [3, 40, 200])
    a, b = truth.copy(), np.where(truth == 0, 1, truth)  # b misses all 3 akiec images
    result = paired_bootstrap(truth, [a], [b], CLASSES, bootstrap=200)
    assert result.per_class["akiec"]["recall"].verdict == "too few test images"
    assert result.per_class["akiec"]["recall"].difference == 1.0
    assert result.statement("recall", "akiec").startswith("too few test images to compare A and B")
    assert (
        paired_bootstrap(truth, [a], [b], CLASSES, bootstrap=200, min_support=3).per_class["akiec"]["recall"].verdict
        == "better"
    )
