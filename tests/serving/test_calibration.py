"""Calibration: temperature scaling fixes a model made overconfident on purpose; the prior shift restores
real class frequencies for a model trained with the class-balancing sampler, while its decisions stay
balanced; the malignant operating point reaches its sensitivity on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from dermasynth.classifier.sampling import weighted_sampler
from dermasynth.serving.calibration import (
    calibrated_probabilities,
    choose_operating_point,
    decide,
    expected_calibration_error,
    fit_serving_calibration,
    fit_temperature,
    malignant_mask,
)
from dermasynth.serving.trust import selective_report, trust_report

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
REAL_PRIOR = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])


def gaussian_lesions(n: int, seed: int, prior: np.ndarray = REAL_PRIOR) -> tuple[np.ndarray, np.ndarray]:
    """2-D features of 7 overlapping Gaussian classes, drawn at ``prior``."""
    rng = np.random.default_rng(seed)
    centres = np.stack([np.cos(np.arange(7) * 2 * np.pi / 7), np.sin(np.arange(7) * 2 * np.pi / 7)], 1) * 2.0
    y = rng.choice(7, size=n, p=prior)
    return (centres[y] + rng.normal(size=(n, 2))).astype(np.float32), y


def train_linear(x: np.ndarray, y: np.ndarray, sampler: bool) -> nn.Module:
    """A softmax regression trained like the classifier: Adam, with the project's class-balancing sampler."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 7))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    draw = weighted_sampler(y.tolist(), 7, torch.Generator().manual_seed(0)) if sampler else None
    loader = torch.utils.data.DataLoader(data, batch_size=128, sampler=draw, shuffle=draw is None)
    for _ in range(15):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return model.eval()


def logits_of(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy().astype(np.float64)


@pytest.fixture(scope="module")
def sampler_model() -> nn.Module:
    return train_linear(*gaussian_lesions(6000, seed=0), sampler=True)


def test_temperature_fixes_a_model_made_overconfident_on_purpose() -> None:
    model = train_linear(*gaussian_lesions(6000, seed=0), sampler=False)
    x_val, y_val = gaussian_lesions(3000, seed=1)
    x_test, y_test = gaussian_lesions(5000, seed=2)
    sharp_val, sharp_test = 4 * logits_of(model, x_val), 4 * logits_of(model, x_test)  # 4x overconfident
    temperature = fit_temperature(sharp_val, y_val)
    assert 3.0 < temperature < 5.5
    before = expected_calibration_error(softmax(sharp_test, axis=1), y_test)
    after = expected_calibration_error(softmax(sharp_test / temperature, axis=1), y_test)
    assert before > 0.1 and after < 0.03 and after < before / 4


def test_prior_shift_restores_real_frequencies_of_a_sampler_trained_model(sampler_model: nn.Module) -> None:
    x_val, y_val = gaussian_lesions(3000, seed=1)
    x_test, y_test = gaussian_lesions(6000, seed=2)
    raw = softmax(logits_of(sampler_model, x_test), axis=1)
    # the sampler's model spreads its mass nearly evenly, far from the real frequencies
    assert abs(raw.mean(axis=0)[5] - REAL_PRIOR[5]) > 0.2
    fitted = fit_serving_calibration(
        logits_of(sampler_model, x_val), y_val, CLASSES, train_prior=np.full(7, 1 / 7), deployment_prior=REAL_PRIOR
    )
    served = calibrated_probabilities(logits_of(sampler_model, x_test), fitted.calibration)
    assert np.abs(served.mean(axis=0) - np.bincount(y_test, minlength=7) / len(y_test)).max() < 0.03
    assert expected_calibration_error(served, y_test) < 0.03 < expected_calibration_error(raw, y_test)

    # decisions stay balanced: the prior-corrected argmax would call nearly everything nv
    report = trust_report(raw, y_test, fitted, CLASSES)
    rules = report.balanced_accuracy_by_rule
    assert fitted.calibration.decision == "balanced"
    assert rules["balanced"] > rules["prior_corrected"] + 0.05
    assert (served.argmax(axis=1) == 5).mean() > 0.7


def test_operating_point_reaches_the_malignant_sensitivity_on_validation(sampler_model: nn.Module) -> None:
    x_val, y_val = gaussian_lesions(3000, seed=1)
    fitted = fit_serving_calibration(
        logits_of(sampler_model, x_val), y_val, CLASSES, train_prior=np.full(7, 1 / 7), deployment_prior=REAL_PRIOR
    )
    point = fitted.operating_point
    assert point is not None and point.malignant_classes == ("akiec", "bcc", "mel")
    assert point.val_sensitivity >= 0.85 and 0 < point.threshold < 1
    x_test, y_test = gaussian_lesions(6000, seed=2)
    served = calibrated_probabilities(logits_of(sampler_model, x_test), fitted.calibration)
    labels = decide(served, fitted.calibration, point, CLASSES)
    malignant = malignant_mask(CLASSES)
    assert malignant[labels][malignant[y_test]].mean() > 0.8  # holds on fresh images, up to sampling
    # a stricter target moves the threshold down
    stricter = choose_operating_point(served, y_test, CLASSES, 0.95)
    assert stricter is not None and stricter.threshold <= point.threshold and stricter.val_sensitivity >= 0.95


def test_conformal_sets_fitted_on_the_other_half_cover_test_images(sampler_model: nn.Module) -> None:
    x_val, y_val = gaussian_lesions(3000, seed=1)
    fitted = fit_serving_calibration(
        logits_of(sampler_model, x_val), y_val, CLASSES, train_prior=np.full(7, 1 / 7), deployment_prior=REAL_PRIOR
    )
    assert fitted.conformal.calibration_images == 1500 and fitted.calibration.fit_images == 1500
    x_test, y_test = gaussian_lesions(6000, seed=2)
    report = trust_report(softmax(logits_of(sampler_model, x_test), axis=1), y_test, fitted, CLASSES)
    assert abs(report.conformal.empirical_coverage - 0.9) <= 0.02
    assert report.ece.calibrated < report.ece.uncalibrated


def test_selective_accuracy_rises_as_coverage_falls() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 1000)
    confidence = rng.random(1000)
    labels = np.where(rng.random(1000) < confidence, targets, (targets + 1) % 3)  # right more often when sure
    report = selective_report(labels, confidence, targets)
    accuracies = [p.accuracy for p in report.points]
    assert [p.coverage for p in report.points] == [0.5, 0.8, 0.9, 1.0]
    assert accuracies == sorted(accuracies, reverse=True) and report.points[-1].images == 1000
    assert 0 < report.aurc < 1 - accuracies[-1]  # below the error rate at full coverage


def test_bad_priors_are_refused() -> None:
    _, y = gaussian_lesions(100, seed=0)
    with pytest.raises(ValueError, match="7 non-negative numbers"):
        fit_serving_calibration(np.zeros((100, 7)), y, CLASSES, train_prior=np.ones(3), deployment_prior=REAL_PRIOR)
