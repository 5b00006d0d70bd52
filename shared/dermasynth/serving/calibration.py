"""Calibrated probabilities and separate decisions, fitted on the validation split.

**Probabilities.** A model trained with the class-balancing sampler (or a class-weighted loss) learns
posteriors for a uniform class prior; its softmax overstates rare classes. Served probabilities are
``softmax(z / T + log pi_deploy - log pi_train)``: the prior shift (Saerens et al. 2002) moves them to
the deployment prior (the real class frequencies of the training split, or priors an operator gives),
and the temperature ``T`` (Guo et al. 2017) is fitted by minimum NLL on validation images, which
follow the real frequencies, with that shift in place.

**Decisions** are separate. Correcting the prior would make a balanced classifier call almost
everything ``nv``; so the label is the argmax of either the balanced scores (the calibrated
probabilities divided by the deployment prior) or the calibrated probabilities themselves, whichever
has the higher balanced accuracy on validation. On top of it, the **operating point** for malignant
lesions (mel, bcc, akiec): an image is called malignant when the calibrated probability of the
malignant group reaches a threshold chosen on validation as the highest one whose malignant
sensitivity is at least the target (default 0.85); the label is then the most likely malignant class,
else the most likely benign one.

The validation split is cut in two halves (seeded): one fits the temperature, the decision rule and
the operating point, the other the conformal sets (:mod:`dermasynth.serving.conformal`), so the sets'
coverage guarantee does not lean on images the calibration was fitted to.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import balanced_accuracy_score
from torchmetrics.functional.classification import multiclass_calibration_error

from dermasynth.data.manifest import Manifest
from dermasynth.serving.conformal import ConformalSets, fit_conformal

MALIGNANT_CLASSES: tuple[str, ...] = ("mel", "bcc", "akiec")
ECE_BINS = 15
SPLIT_SEED = 0


class Calibration(BaseModel):
    """Temperature, prior shift and the decision rule, with what they did on validation."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(gt=0)
    train_prior: tuple[float, ...] = Field(description="class frequencies the model was trained on")
    deployment_prior: tuple[float, ...] = Field(description="class frequencies served probabilities reflect")
    decision: Literal["balanced", "prior_corrected"] = Field(
        description="argmax of the balanced scores or of the calibrated probabilities"
    )
    val_balanced_accuracy: dict[str, float] = Field(
        description="validation balanced accuracy of each decision rule (balanced, prior_corrected)"
    )
    val_ece_before: float
    val_ece_after: float
    fit_images: int = Field(ge=1)

    @property
    def log_shift(self) -> np.ndarray:
        """``log pi_deploy - log pi_train`` (0 where a class is absent from either)."""
        train, deploy = np.asarray(self.train_prior), np.asarray(self.deployment_prior)
        with np.errstate(divide="ignore"):
            shift = np.log(deploy) - np.log(train)
        return np.where(np.isfinite(shift), shift, 0.0)


class OperatingPoint(BaseModel):
    """When an image is called malignant: P(mel or bcc or akiec) at or above ``threshold``."""

    model_config = ConfigDict(frozen=True)

    malignant_classes: tuple[str, ...]
    threshold: float = Field(ge=0, le=1)
    target_sensitivity: float = Field(ge=0, le=1)
    val_sensitivity: float
    val_specificity: float


@dataclass(frozen=True)
class ServingCalibration:
    """Everything fitted on validation that the contract carries."""

    calibration: Calibration
    operating_point: OperatingPoint | None
    conformal: ConformalSets


def training_prior(manifest: Manifest, classes: Sequence[str], balance: str) -> np.ndarray:
    """Class frequencies a model trained on ``manifest``'s train split saw.

    ``sampler`` and ``loss`` balancing make every class present in training equally likely; ``none``
    (and the deployment default) is the frequency of the split's real rows.
    """
    rows = manifest.in_split("train")
    counts = np.array([sum(r.label == c for r in rows if r.source != "synthetic") for c in classes], dtype=np.float64)
    if balance in ("sampler", "loss"):
        present = np.array([any(r.label == c for r in rows) for c in classes], dtype=np.float64)
        return present / present.sum()
    if counts.sum() == 0:
        raise ValueError("the train split holds no real images to take class frequencies from")
    return counts / counts.sum()


def check_prior(prior: Sequence[float] | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """A prior as an array summing to 1. Raises ValueError naming what is wrong."""
    values = np.asarray(prior, dtype=np.float64)
    if values.shape != (len(classes),) or (values < 0).any() or values.sum() <= 0:
        raise ValueError(
            f"a prior needs {len(classes)} non-negative numbers ({', '.join(classes)}) with a positive sum; got {prior}"
        )
    return values / values.sum()


def calibrated_probabilities(logits: np.ndarray, calibration: Calibration) -> np.ndarray:
    """(N, C) served probabilities: ``softmax(z / T + log pi_deploy - log pi_train)``."""
    return softmax(logits.astype(np.float64) / calibration.temperature + calibration.log_shift, axis=1)


def balanced_scores(probabilities: np.ndarray, calibration: Calibration) -> np.ndarray:
    """The calibrated probabilities re-weighted to a uniform prior (what a balanced decision compares)."""
    prior = np.asarray(calibration.deployment_prior)
    scores = probabilities / np.where(prior > 0, prior, 1.0)
    return scores / scores.sum(axis=1, keepdims=True)


def malignant_mask(classes: Sequence[str]) -> np.ndarray:
    return np.array([c in MALIGNANT_CLASSES for c in classes])


def decide(
    probabilities: np.ndarray, calibration: Calibration, operating_point: OperatingPoint | None, classes: Sequence[str]
) -> np.ndarray:
    """(N,) served labels: the decision rule, refined by the malignant operating point when there is one."""
    scores = balanced_scores(probabilities, calibration) if calibration.decision == "balanced" else probabilities
    if operating_point is None:
        return scores.argmax(axis=1)
    malignant = malignant_mask(classes)
    flagged = probabilities[:, malignant].sum(axis=1) >= operating_point.threshold
    best_malignant = np.where(malignant[None, :], scores, -np.inf).argmax(axis=1)
    best_benign = np.where(~malignant[None, :], scores, -np.inf).argmax(axis=1)
    return np.where(flagged, best_malignant, best_benign)


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE (L1, equal-width bins), as torchmetrics computes it."""
    return float(
        multiclass_calibration_error(
            torch.from_numpy(probabilities).float(),
            torch.from_numpy(targets).long(),
            num_classes=probabilities.shape[1],
            n_bins=bins,
            norm="l1",
        )
    )


def brier_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Multiclass Brier score: mean over images of the squared distance to the one-hot label."""
    onehot = np.eye(probabilities.shape[1])[targets]
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def balanced_accuracy(targets: np.ndarray, predictions: np.ndarray) -> float:
    with warnings.catch_warnings():  # a class predicted but absent from a small split
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(targets, predictions))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, shift: np.ndarray | None = None) -> float:
    """The temperature minimizing the NLL of ``softmax(z / T + shift)`` on labelled logits."""
    z = logits.astype(np.float64)
    bias = np.zeros(z.shape[1]) if shift is None else shift

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / math.exp(log_t) + bias, axis=1)[np.arange(len(targets)), targets].mean())

    result = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))


def choose_operating_point(
    probabilities: np.ndarray, targets: np.ndarray, classes: Sequence[str], target_sensitivity: float
) -> OperatingPoint | None:
    """The highest P(malignant) threshold whose malignant sensitivity on these images reaches the target.

    None when the classes hold no malignant class, or the images no malignant or no benign lesion.
    """
    malignant = malignant_mask(classes)
    if not malignant.any() or malignant.all():
        return None
    p_mal = probabilities[:, malignant].sum(axis=1)
    positive = malignant[targets]
    if not positive.any() or positive.all():
        return None
    candidates = np.sort(np.unique(p_mal[positive]))[::-1]
    threshold = float(candidates[-1])
    for t in candidates:  # highest first: the first that reaches the target keeps the most specificity
        if (p_mal[positive] >= t).mean() >= target_sensitivity:
            threshold = float(t)
            break
    flagged = p_mal >= threshold
    return OperatingPoint(
        malignant_classes=tuple(c for c in classes if c in MALIGNANT_CLASSES),
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        val_sensitivity=float(flagged[positive].mean()),
        val_specificity=float((~flagged[~positive]).mean()),
    )


def split_halves(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two halves of ``n`` validation images (calibration fit, conformal)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def fit_serving_calibration(
    logits: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    *,
    train_prior: np.ndarray,
    deployment_prior: np.ndarray,
    coverage: float = 0.9,
    malignant_sensitivity: float = 0.85,
    max_set_size: int = 2,
    conformal_method: Literal["aps", "raps"] = "raps",
) -> ServingCalibration:
    """Fit calibration, decision rule and operating point on one half of validation, conformal sets on the other.

    Raises:
        ValueError: fewer than 4 validation images, or priors that do not fit the classes.
    """
    if len(targets) < 4:
        raise ValueError(f"calibration needs at least 4 validation images, got {len(targets)}")
    train_p, deploy_p = check_prior(train_prior, classes), check_prior(deployment_prior, classes)
    fit_idx, conf_idx = split_halves(len(targets))
    z, y = logits[fit_idx], targets[fit_idx]
    provisional = Calibration(
        temperature=1.0,
        train_prior=tuple(train_p),
        deployment_prior=tuple(deploy_p),
        decision="balanced",
        val_balanced_accuracy={},
        val_ece_before=0.0,
        val_ece_after=0.0,
        fit_images=len(y),
    )
    temperature = fit_temperature(z, y, provisional.log_shift)
    fitted = provisional.model_copy(update={"temperature": temperature})
    probs = calibrated_probabilities(z, fitted)
    rules = {
        "balanced": balanced_accuracy(y, balanced_scores(probs, fitted).argmax(axis=1)),
        "prior_corrected": balanced_accuracy(y, probs.argmax(axis=1)),
    }
    decision: Literal["balanced", "prior_corrected"] = (
        "balanced" if rules["balanced"] >= rules["prior_corrected"] else "prior_corrected"
    )
    calibration = fitted.model_copy(
        update={
            "decision": decision,
            "val_balanced_accuracy": rules,
            "val_ece_before": expected_calibration_error(softmax(z.astype(np.float64), axis=1), y),
            "val_ece_after": expected_calibration_error(probs, y),
        }
    )
    operating_point = choose_operating_point(probs, y, classes, malignant_sensitivity)
    conformal = fit_conformal(
        calibrated_probabilities(logits[conf_idx], calibration), targets[conf_idx], coverage, conformal_method
    )
    return ServingCalibration(calibration, operating_point, conformal)


def reliability_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, bins: int = ECE_BINS) -> bytes:
    """A reliability diagram (top-label confidence vs accuracy per bin) of each named (probabilities, targets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (name, (probs, targets)) in zip(axes[0], curves.items(), strict=True):
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        centres, accuracy, counts = [], [], []
        for b in range(bins):
            inside = which == b
            if inside.any():
                centres.append(confidence[inside].mean())
                accuracy.append(correct[inside].mean())
                counts.append(int(inside.sum()))
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        ax.bar(
            edges[:-1],
            np.histogram(confidence, edges)[0] / len(confidence),
            width=1 / bins,
            align="edge",
            alpha=0.2,
            color="tab:blue",
            label="share of images",
        )
        ax.plot(centres, accuracy, "o-", color="tab:red", label="accuracy")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence (top class)",
            ylabel="accuracy",
            title=f"{name}: ECE {expected_calibration_error(probs, targets):.3f}",
        )
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
