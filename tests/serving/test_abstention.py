from __future__ import annotations

import numpy as np
import pytest
import torch

from dermasynth.serving.abstention import AbstainReason, calibrate_threshold, decide, fit_mahalanobis
from dermasynth.serving.contract import AbstentionPolicy

POLICY = AbstentionPolicy(
    min_probability=0.5, ood_threshold=10.0, ood_quantile=0.95, calibration_images=20, fit_images=100
)


def _clusters(rng: np.random.Generator, n: int = 200, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    targets = rng.integers(0, 3, n)
    centres = np.eye(3, dim) * 6
    return centres[targets] + rng.normal(0, 1, (n, dim)), targets


def test_mahalanobis_scores_far_points_higher_than_held_out_in_distribution_ones() -> None:
    rng = np.random.default_rng(0)
    features, targets = _clusters(rng)
    score = fit_mahalanobis(features, targets)
    held_out, _ = _clusters(rng, 100)
    far = rng.normal(0, 1, (20, 16)) + 15
    with torch.no_grad():
        inside = score(torch.from_numpy(held_out).float()).squeeze(1).numpy()
        outside = score(torch.from_numpy(far).float()).squeeze(1).numpy()
    assert inside.shape == (100,) and outside.shape == (20,)
    threshold = calibrate_threshold(inside, 0.95)
    assert np.mean(inside > threshold) <= 0.06
    assert (outside > threshold).all()
    # ~ chi-square with 16 degrees of freedom for points drawn like the training data
    assert 8 < np.median(inside) < 30


def test_mahalanobis_needs_matching_shapes_and_two_images() -> None:
    with pytest.raises(ValueError, match="features must be"):
        fit_mahalanobis(np.zeros((4, 3)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="at least 2"):
        fit_mahalanobis(np.zeros((1, 3)), np.zeros(1, dtype=int))


def test_classes_without_training_images_get_no_mean() -> None:
    rng = np.random.default_rng(1)
    features, targets = _clusters(rng)
    score = fit_mahalanobis(features, np.where(targets == 1, 2, targets))
    assert score.means.shape == (2, 16)


def test_threshold_is_the_quantile_and_refuses_bad_input() -> None:
    assert calibrate_threshold(np.arange(101, dtype=float), 0.9) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="no validation scores"):
        calibrate_threshold(np.array([]), 0.9)
    with pytest.raises(ValueError, match="quantile"):
        calibrate_threshold(np.ones(3), 1.5)


@pytest.mark.parametrize(
    ("probability", "ood", "reason"),
    [
        (0.9, 2.0, None),
        (0.3, 2.0, AbstainReason.LOW_CONFIDENCE),
        (0.9, 50.0, AbstainReason.OUT_OF_DISTRIBUTION),
        (0.3, 50.0, AbstainReason.OUT_OF_DISTRIBUTION),
        (0.9, float("nan"), AbstainReason.OUT_OF_DISTRIBUTION),
    ],
)
def test_decide(probability: float, ood: float, reason: AbstainReason | None) -> None:
    decision = decide(probability, ood, POLICY)
    assert decision.abstain is (reason is not None)
    assert decision.reason == reason
    if reason is not None:
        assert "dermatologist" in decision.detail


MALIGNANT = ("mel", "bcc", "akiec")
NAMES = {"mel": "Melanoma", "nv": "Melanocytic nevus", "bkl": "Benign keratosis-like lesion", "bcc": "BCC"}


def test_prediction_sets_decide_abstention_and_say_why_in_plain_words() -> None:
    policy = POLICY.model_copy(update={"min_probability": 0.0, "max_set_size": 2})
    assert not decide(0.6, 2.0, policy, ["nv"], MALIGNANT, NAMES).abstain
    assert not decide(0.6, 2.0, policy, ["nv", "bkl"], MALIGNANT, NAMES).abstain  # benign either way
    assert not decide(0.6, 2.0, policy, ["mel", "bcc"], MALIGNANT, NAMES).abstain  # malignant either way

    mixed = decide(0.6, 2.0, policy, ["nv", "mel"], MALIGNANT, NAMES)
    assert mixed.abstain and mixed.reason == AbstainReason.MALIGNANT_NOT_RULED_OUT
    assert "Melanoma as well as Melanocytic nevus" in mixed.detail and "cannot tell whether" in mixed.detail

    large = decide(0.4, 2.0, policy, ["nv", "bkl", "df"], MALIGNANT, NAMES)
    assert large.reasons == (AbstainReason.SET_TOO_LARGE,) and "3 classes are plausible" in large.detail

    everything = decide(0.2, 50.0, policy, ["nv", "bkl", "mel"], MALIGNANT, NAMES)
    assert everything.reasons == (
        AbstainReason.OUT_OF_DISTRIBUTION,
        AbstainReason.MALIGNANT_NOT_RULED_OUT,
        AbstainReason.SET_TOO_LARGE,
    )
    assert everything.reason == AbstainReason.OUT_OF_DISTRIBUTION and everything.detail.endswith("see a dermatologist")

    lenient = policy.model_copy(update={"abstain_on_mixed_set": False})
    assert not decide(0.6, 2.0, lenient, ["nv", "mel"], MALIGNANT, NAMES).abstain
