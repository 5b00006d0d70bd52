"""Split conformal sets on synthetic data with a known answer: labels drawn from the very probabilities
the sets are built from, so the true class is in an APS/RAPS set exactly as often as promised."""

from __future__ import annotations

import numpy as np
import pytest

from dermasynth.serving.conformal import fit_conformal, prediction_sets, set_metrics


def calibrated_data(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from a Dirichlet, labels drawn from them: a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(classes, 0.4), size=n)
    targets = np.array([rng.choice(classes, p=p) for p in probabilities])
    return probabilities, targets


@pytest.mark.parametrize("method", ["aps", "raps"])
@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_coverage_holds_on_fresh_data(method: str, coverage: float) -> None:
    cal_p, cal_y = calibrated_data(2000, 7, seed=1)
    test_p, test_y = calibrated_data(10000, 7, seed=2)
    sets = fit_conformal(cal_p, cal_y, coverage=coverage, method=method)  # type: ignore[arg-type]
    got = set_metrics(test_p, test_y, sets)
    # the guarantee: at least the target, at most target + 1/(n+1), up to sampling noise of 10,000 images
    assert coverage - 0.01 <= got["empirical_coverage"] <= coverage + 0.02
    assert 1 <= got["mean_set_size"] < 7


def test_sets_grow_with_coverage() -> None:
    cal_p, cal_y = calibrated_data(2000, 7, seed=3)
    sizes = [
        set_metrics(cal_p, cal_y, fit_conformal(cal_p, cal_y, coverage=c, method="aps"))["mean_set_size"]
        for c in (0.7, 0.85, 0.95)
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_confident_images_get_one_class_and_the_top_class_is_always_in() -> None:
    sure = np.eye(5)[[0, 1, 2, 3, 4] * 20] * 0.96 + 0.01
    sets = fit_conformal(sure, np.array([0, 1, 2, 3, 4] * 20), coverage=0.9)
    member = prediction_sets(sure, sets)
    assert (member.sum(axis=1) == 1).all() and member[np.arange(100), sure.argmax(axis=1)].all()


def test_few_calibration_images_give_every_class() -> None:
    p, y = calibrated_data(5, 4, seed=0)
    sets = fit_conformal(p, y, coverage=0.9)  # ceil(6 * 0.9) / 5 > 1: no finite quantile
    assert prediction_sets(p, sets).all()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="coverage"):
        fit_conformal(np.ones((3, 2)) / 2, np.array([0, 1, 0]), coverage=1.0)
    with pytest.raises(ValueError, match="targets"):
        fit_conformal(np.ones((3, 2)) / 2, np.array([0, 1]))
