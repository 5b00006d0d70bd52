"""Split conformal prediction sets (APS, and RAPS with its rank penalty), fitted on validation data.

Each image gets the set of classes that, with probability at least ``coverage`` over exchangeable
images, contains its true class (Romano et al. 2020, APS; Angelopoulos et al. 2021, RAPS). The
conformity score of class ``y`` is the probability mass of the classes ranked above it, plus
``lam * max(0, rank(y) - k_reg)`` for RAPS; the threshold ``qhat`` is the
``ceil((n + 1) * coverage) / n`` empirical quantile of the true classes' scores on ``n`` calibration
images, and a set holds every class whose score is at most ``qhat``. The score is not randomized, so
served sets are deterministic; counting only the mass *above* a class (the non-randomized APS with
``u = 0``) puts the top class in every set (its score is 0) without breaking the guarantee: the
coverage lies between ``coverage`` and ``coverage + 1 / (n + 1)`` on average, up to the share of
images whose true class is ranked first when that share exceeds ``coverage`` (then sets are single).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ConformalSets(BaseModel):
    """A fitted set predictor: method, target coverage and threshold."""

    model_config = ConfigDict(frozen=True)

    method: Literal["aps", "raps"] = "raps"
    coverage: float = Field(gt=0, lt=1, description="target probability that the set holds the true class")
    qhat: float = Field(description="score threshold; a class is in the set when its score is at most this")
    lam: float = Field(default=0.0, ge=0, description="RAPS rank penalty per class beyond k_reg")
    k_reg: int = Field(default=1, ge=0, description="classes free of the RAPS penalty")
    calibration_images: int = Field(ge=1)
    empirical_coverage: float = Field(ge=0, le=1, description="coverage on the calibration images themselves")


def _scores(probabilities: np.ndarray, lam: float, k_reg: int) -> np.ndarray:
    """(N, C) conformity score of every class of every image."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    sorted_p = np.take_along_axis(probabilities, order, axis=1)
    cumulative = np.cumsum(sorted_p, axis=1)
    ranks = np.arange(1, probabilities.shape[1] + 1)
    penalty = lam * np.maximum(0, ranks - k_reg)
    sorted_scores = cumulative - sorted_p + penalty[None, :]
    scores = np.empty_like(sorted_scores)
    np.put_along_axis(scores, order, sorted_scores, axis=1)
    return scores


def fit_conformal(
    probabilities: np.ndarray,
    targets: np.ndarray,
    coverage: float = 0.9,
    method: Literal["aps", "raps"] = "raps",
    lam: float = 0.01,
    k_reg: int = 2,
) -> ConformalSets:
    """Fit the set threshold on calibration images' probabilities (N, C) and true classes (N,).

    Raises:
        ValueError: for mismatched shapes, no images, or a coverage outside (0, 1).
    """
    if probabilities.ndim != 2 or targets.shape != (probabilities.shape[0],) or probabilities.shape[0] == 0:
        raise ValueError(
            f"probabilities must be (N, C) and targets (N,) with N > 0; got {probabilities.shape} and {targets.shape}"
        )
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
    lam = lam if method == "raps" else 0.0
    n = probabilities.shape[0]
    true_scores = _scores(probabilities.astype(np.float64), lam, k_reg)[np.arange(n), targets]
    level = math.ceil((n + 1) * coverage) / n
    qhat = float(np.quantile(true_scores, level, method="higher")) if level <= 1 else math.inf
    fitted = ConformalSets(
        method=method,
        coverage=coverage,
        qhat=qhat if math.isfinite(qhat) else 1e9,
        lam=lam,
        k_reg=k_reg,
        calibration_images=n,
        empirical_coverage=0.0,
    )
    covered = prediction_sets(probabilities, fitted)[np.arange(n), targets]
    return fitted.model_copy(update={"empirical_coverage": float(covered.mean())})


def prediction_sets(probabilities: np.ndarray, sets: ConformalSets) -> np.ndarray:
    """(N, C) boolean membership of each class in each image's set (the top class is always in)."""
    return _scores(probabilities.astype(np.float64), sets.lam, sets.k_reg) <= sets.qhat


def set_metrics(probabilities: np.ndarray, targets: np.ndarray, sets: ConformalSets) -> dict[str, float]:
    """Empirical coverage and mean set size of ``sets`` on labelled images (e.g. the test split)."""
    member = prediction_sets(probabilities, sets)
    return {
        "target_coverage": sets.coverage,
        "empirical_coverage": float(member[np.arange(len(targets)), targets].mean()),
        "mean_set_size": float(member.sum(axis=1).mean()),
        "singleton_fraction": float((member.sum(axis=1) == 1).mean()),
    }
