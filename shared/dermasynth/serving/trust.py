"""How far a run's predictions can be trusted on a split, with the serving calibration fitted on validation.

What ``dermasynth evaluate --json`` adds to the classification metrics: expected calibration error and
Brier score before and after calibration (with a reliability diagram), balanced accuracy of each
decision rule, malignant sensitivity and specificity at the served decision rule, selective accuracy
at several coverages with the area under the risk-coverage curve, and the conformal sets' empirical
coverage and mean size. The calibration is the one export stores in the contract
(:func:`~dermasynth.serving.calibration.fit_serving_calibration` on the validation split), so these
figures describe what the gateway serves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field
from torch.utils.data import DataLoader

from dermasynth.classifier.checkpoint import TrainedModel
from dermasynth.classifier.engine import evaluate
from dermasynth.data.dataset import ManifestDataset
from dermasynth.data.manifest import Manifest
from dermasynth.serving.calibration import (
    ServingCalibration,
    balanced_accuracy,
    balanced_scores,
    brier_score,
    calibrated_probabilities,
    decide,
    expected_calibration_error,
    fit_serving_calibration,
    malignant_mask,
    reliability_png,
    training_prior,
)
from dermasynth.serving.conformal import set_metrics

SELECTIVE_COVERAGES = (0.5, 0.8, 0.9, 1.0)
RELIABILITY_NAME = "reliability.png"
_EPS = 1e-12


class BeforeAfter(BaseModel):
    uncalibrated: float = Field(description="softmax of the trained model")
    calibrated: float = Field(description="temperature and prior shift fitted on validation")


class MalignantReport(BaseModel):
    classes: list[str]
    sensitivity: float = Field(description="malignant lesions called malignant by the served decision rule")
    specificity: float = Field(description="benign lesions not called malignant")
    threshold: float | None = Field(description="P(malignant) operating point chosen on validation")
    target_sensitivity: float
    positives: int
    negatives: int


class SelectivePoint(BaseModel):
    coverage: float
    images: int
    accuracy: float
    balanced_accuracy: float


class SelectiveReport(BaseModel):
    confidence: str = "calibrated probability of the served label"
    points: list[SelectivePoint]
    aurc: float = Field(description="area under the risk (error rate) - coverage curve; lower is better")


class ConformalReport(BaseModel):
    method: str
    target_coverage: float
    empirical_coverage: float
    mean_set_size: float
    singleton_fraction: float
    qhat: float
    calibration_images: int


class TrustReport(BaseModel):
    """The trust figures of one split (keys of ``evaluate --json``)."""

    calibration_split: str = "val"
    temperature: float
    decision_rule: str
    ece: BeforeAfter
    brier: BeforeAfter
    balanced_accuracy_by_rule: dict[str, float] = Field(
        description="argmax of the uncalibrated softmax, of the balanced scores, of the prior-corrected "
        "probabilities, and the served rule (with the malignant operating point)"
    )
    malignant: MalignantReport | None
    selective: SelectiveReport
    conformal: ConformalReport
    reliability_png: str | None = None


def split_probabilities(
    trained: TrainedModel, manifest: Manifest, split: str, *, tta: bool = False, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, probabilities) of the real images of ``split``."""
    records = [r for r in manifest.in_split(split) if r.source != "synthetic"]
    if not records:
        raise ValueError(f"split {split!r} holds no real images")
    dataset = ManifestDataset(manifest, records, trained.preprocessing.eval_transform(), trained.classes)
    return evaluate(trained.model, DataLoader(dataset, batch_size=batch_size), trained.device, tta=tta)


def as_logits(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits up to a per-image constant, which softmax ignores."""
    return np.log(np.maximum(probabilities.astype(np.float64), _EPS))


def selective_report(labels: np.ndarray, confidence: np.ndarray, targets: np.ndarray) -> SelectiveReport:
    """Accuracy on the most confident fraction of images, and the area under the risk-coverage curve."""
    order = np.argsort(-confidence, kind="stable")
    correct = (labels == targets)[order]
    points = []
    for coverage in SELECTIVE_COVERAGES:
        keep = max(1, math.ceil(coverage * len(targets)))
        kept = order[:keep]
        points.append(
            SelectivePoint(
                coverage=coverage,
                images=keep,
                accuracy=float(correct[:keep].mean()),
                balanced_accuracy=balanced_accuracy(targets[kept], labels[kept]),
            )
        )
    risks = 1 - np.cumsum(correct) / np.arange(1, len(correct) + 1)
    return SelectiveReport(points=points, aurc=float(risks.mean()))


def trust_report(
    probabilities: np.ndarray,
    targets: np.ndarray,
    fitted: ServingCalibration,
    classes: Sequence[str],
) -> TrustReport:
    """The trust figures of ``probabilities`` (uncalibrated softmax) against ``targets`` under ``fitted``."""
    calibration = fitted.calibration
    calibrated = calibrated_probabilities(as_logits(probabilities), calibration)
    labels = decide(calibrated, calibration, fitted.operating_point, classes)
    malignant = malignant_mask(classes)
    mal_report = None
    if malignant.any() and not malignant.all():
        positive, flagged = malignant[targets], malignant[labels]
        point = fitted.operating_point
        mal_report = MalignantReport(
            classes=[c for c, m in zip(classes, malignant, strict=True) if m],
            sensitivity=float(flagged[positive].mean()) if positive.any() else float("nan"),
            specificity=float((~flagged[~positive]).mean()) if (~positive).any() else float("nan"),
            threshold=point.threshold if point else None,
            target_sensitivity=point.target_sensitivity if point else float("nan"),
            positives=int(positive.sum()),
            negatives=int((~positive).sum()),
        )
    sets = fitted.conformal
    return TrustReport(
        temperature=calibration.temperature,
        decision_rule=calibration.decision,
        ece=BeforeAfter(
            uncalibrated=expected_calibration_error(probabilities, targets),
            calibrated=expected_calibration_error(calibrated, targets),
        ),
        brier=BeforeAfter(
            uncalibrated=brier_score(probabilities, targets), calibrated=brier_score(calibrated, targets)
        ),
        balanced_accuracy_by_rule={
            "argmax_uncalibrated": balanced_accuracy(targets, probabilities.argmax(axis=1)),
            "balanced": balanced_accuracy(targets, balanced_scores(calibrated, calibration).argmax(axis=1)),
            "prior_corrected": balanced_accuracy(targets, calibrated.argmax(axis=1)),
            "served": balanced_accuracy(targets, labels),
        },
        malignant=mal_report,
        selective=selective_report(labels, calibrated[np.arange(len(labels)), labels], targets),
        conformal=ConformalReport(
            method=sets.method,
            qhat=sets.qhat,
            calibration_images=sets.calibration_images,
            **set_metrics(calibrated, targets, sets),
        ),
    )


def fit_for_run(
    trained: TrainedModel,
    manifest: Manifest,
    val: tuple[np.ndarray, np.ndarray],
    *,
    coverage: float = 0.9,
    malignant_sensitivity: float = 0.85,
    max_set_size: int = 2,
) -> ServingCalibration:
    """The serving calibration of a run, fitted on its validation (targets, probabilities)."""
    targets, probabilities = val
    real = training_prior(manifest, trained.classes, balance="none")
    return fit_serving_calibration(
        as_logits(probabilities),
        targets,
        trained.classes,
        train_prior=training_prior(manifest, trained.classes, balance=trained.config.balance),
        deployment_prior=real,
        coverage=coverage,
        malignant_sensitivity=malignant_sensitivity,
        max_set_size=max_set_size,
    )


def reliability_figure(probabilities: np.ndarray, targets: np.ndarray, fitted: ServingCalibration, title: str) -> bytes:
    """The reliability diagram before and after calibration."""
    calibrated = calibrated_probabilities(as_logits(probabilities), fitted.calibration)
    return reliability_png({"uncalibrated": (probabilities, targets), "calibrated": (calibrated, targets)}, title)
