from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support

from dermasynth.metrics.pooled import pooled_metrics

CLASSES = ["a", "b", "c", "d"]


def _noisy(truth: np.ndarray, error_rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(truth.size) < error_rate
    return np.where(wrong, (truth + rng.integers(1, 3, truth.size)) % 3, truth)


TRUTH = np.repeat([0, 1, 2], [120, 40, 15])  # class d has no test images


def test_one_run_agrees_with_scikit_learn() -> None:
    pred = _noisy(TRUTH, 0.3, 1)
    m = pooled_metrics(TRUTH, [pred], CLASSES, bootstrap=300)
    assert m.runs == 1 and m.n == TRUTH.size and m.support == {"a": 120, "b": 40, "c": 15, "d": 0}
    assert m.overall["accuracy"].value == pytest.approx(accuracy_score(TRUTH, pred))
    assert m.overall["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(TRUTH, pred))
    assert m.overall["macro_f1"].value == pytest.approx(f1_score(TRUTH, pred, average="macro"))
    precision, recall, f1, _ = precision_recall_fscore_support(TRUTH, pred, labels=[0, 1, 2])
    assert set(m.per_class) == {"a", "b", "c"}
    for c, label in enumerate("abc"):
        row = m.per_class[label]
        assert (row["precision"].value, row["recall"].value, row["f1"].value) == pytest.approx(
            (precision[c], recall[c], f1[c])
        )
        assert row["accuracy"].value == pytest.approx(accuracy_score(np.equal(TRUTH, c), np.equal(pred, c)))
        for estimate in row.values():
            assert estimate.ci is not None and estimate.ci.low <= estimate.value <= estimate.ci.high
            assert estimate.seed_sd is None and estimate.seed_mean == pytest.approx(estimate.value)


def test_seeds_are_pooled_and_their_spread_reported() -> None:
    runs = [_noisy(TRUTH, rate, seed) for seed, rate in enumerate((0.1, 0.3, 0.5))]
    m = pooled_metrics(TRUTH, runs, CLASSES, bootstrap=0)
    pooled_truth, pooled_pred = np.tile(TRUTH, 3), np.concatenate(runs)
    assert m.runs == 3 and m.overall["accuracy"].ci is None
    assert m.overall["macro_f1"].value == pytest.approx(f1_score(pooled_truth, pooled_pred, average="macro"))
    per_seed = [balanced_accuracy_score(TRUTH, p) for p in runs]
    assert m.overall["balanced_accuracy"].seed_mean == pytest.approx(np.mean(per_seed))
    assert m.overall["balanced_accuracy"].seed_sd == pytest.approx(np.std(per_seed, ddof=1))
    assert np.sum(m.confusion_matrix) == 3 * TRUTH.size


def test_bad_predictions_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        pooled_metrics(TRUTH, [], CLASSES)
    with pytest.raises(ValueError, match="predict the 175 test images once"):
        pooled_metrics(TRUTH, [TRUTH[:-1]], CLASSES)
    with pytest.raises(ValueError, match=r"accepted: 0\.\.3"):
        pooled_metrics(TRUTH, [TRUTH + 2], CLASSES)
