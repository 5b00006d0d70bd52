"""Abstention: when a prediction should not be trusted.

Signals, all cheap at serving time:

* the conformal prediction set (:mod:`dermasynth.serving.conformal`): more than ``max_set_size``
  classes means the model cannot narrow it down at the promised coverage; a set that holds a
  malignant class (mel, bcc, akiec) beside benign ones means it cannot rule out a malignant lesion;
* optionally, the top calibrated probability below ``min_probability`` (off by default);
* an out-of-distribution score: the Mahalanobis distance of the image's penultimate features to the
  nearest class mean of the training images, with one shared covariance (Lee et al., NeurIPS 2018).
  Softmax confidence alone is famously high on inputs unlike anything seen in training (noise, a
  photograph of something else); feature-space distance catches those. The covariance is estimated
  with Ledoit-Wolf shrinkage (features are often wider than the training set is large), and the
  threshold is a high quantile of the scores of the validation images, so that by construction about
  ``1 - quantile`` of in-distribution images are flagged.

The score is computed inside the exported model (:class:`MahalanobisScore`), so Triton returns it
beside the logits and the gateway only compares numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from dermasynth.serving.contract import AbstentionPolicy


class AbstainReason(StrEnum):
    """Why a prediction abstains; the values appear in API responses."""

    LOW_CONFIDENCE = "low_confidence"
    OUT_OF_DISTRIBUTION = "out_of_distribution"
    SET_TOO_LARGE = "set_too_large"
    MALIGNANT_NOT_RULED_OUT = "malignant_not_ruled_out"


@dataclass(frozen=True)
class Decision:
    """Whether to abstain, the reasons (most serious first), and sentences a clinician can read."""

    abstain: bool
    reason: AbstainReason | None = None
    detail: str = ""
    reasons: tuple[AbstainReason, ...] = field(default=())


class MahalanobisScore(nn.Module):
    """features (N, D) -> (N, 1): the smallest squared Mahalanobis distance to a class mean."""

    means: torch.Tensor
    precision: torch.Tensor

    def __init__(self, means: torch.Tensor, precision: torch.Tensor) -> None:
        super().__init__()
        if means.ndim != 2 or precision.shape != (means.shape[1], means.shape[1]):
            raise ValueError(
                f"means must be (classes, D) and precision (D, D); got {tuple(means.shape)} and "
                f"{tuple(precision.shape)}"
            )
        self.register_buffer("means", means.to(torch.float32))
        self.register_buffer("precision", precision.to(torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        centred = features.unsqueeze(1) - self.means.unsqueeze(0)  # (N, C, D)
        distances = ((centred @ self.precision) * centred).sum(dim=-1)  # (N, C)
        return distances.min(dim=1, keepdim=True).values


def fit_mahalanobis(features: np.ndarray, targets: np.ndarray) -> MahalanobisScore:
    """Class means and a shared shrunk covariance of training features.

    Args:
        features: (N, D) penultimate features of the training images.
        targets: (N,) their class indices; classes without images get no mean.

    Raises:
        ValueError: if the shapes disagree or fewer than two images are given.
    """
    if features.ndim != 2 or targets.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) and targets (N,); got {features.shape} and {targets.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"at least 2 training images are needed to fit the OOD score, got {features.shape[0]}")
    x = features.astype(np.float64)
    present = np.unique(targets)
    means = np.stack([x[targets == c].mean(axis=0) for c in present])
    centred = x - means[np.searchsorted(present, targets)]
    precision = LedoitWolf(assume_centered=True).fit(centred).get_precision()
    return MahalanobisScore(torch.from_numpy(means), torch.from_numpy(precision))


def calibrate_threshold(scores: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of in-distribution (validation) scores: above it, an image is out of distribution.

    Raises:
        ValueError: for an empty score list or a quantile outside (0, 1].
    """
    if scores.size == 0:
        raise ValueError("no validation scores to calibrate the OOD threshold on")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    return float(np.quantile(scores.astype(np.float64), quantile))


def decide(
    max_probability: float,
    ood_score: float,
    policy: AbstentionPolicy,
    prediction_set: Sequence[str] = (),
    malignant: Collection[str] = (),
    names: dict[str, str] | None = None,
) -> Decision:
    """Apply the abstention policy to one image.

    Reasons, most serious first: out of distribution; a set mixing malignant and benign classes; a
    set larger than ``policy.max_set_size``; a top probability under ``policy.min_probability``.
    """
    names = names or {}
    found: list[tuple[AbstainReason, str]] = []
    if not np.isfinite(ood_score) or ood_score > policy.ood_threshold:
        found.append(
            (
                AbstainReason.OUT_OF_DISTRIBUTION,
                f"the image looks unlike the images the model was trained on (OOD score {ood_score:.1f} "
                f"> threshold {policy.ood_threshold:.1f})",
            )
        )
    in_set_malignant = [c for c in prediction_set if c in malignant]
    in_set_benign = [c for c in prediction_set if c not in malignant]
    if policy.abstain_on_mixed_set and in_set_malignant and in_set_benign:
        found.append(
            (
                AbstainReason.MALIGNANT_NOT_RULED_OUT,
                "the model cannot tell whether this lesion is malignant: its likely classes include "
                + _listing([names.get(c, c) for c in in_set_malignant])
                + " as well as "
                + _listing([names.get(c, c) for c in in_set_benign]),
            )
        )
    if len(prediction_set) > policy.max_set_size:
        found.append(
            (
                AbstainReason.SET_TOO_LARGE,
                f"the model cannot narrow this image down: {len(prediction_set)} classes are plausible "
                f"(at most {policy.max_set_size} allowed)",
            )
        )
    if max_probability < policy.min_probability:
        found.append(
            (
                AbstainReason.LOW_CONFIDENCE,
                f"the model is unsure (top probability {max_probability:.2f} < {policy.min_probability:.2f})",
            )
        )
    if not found:
        return Decision(False)
    detail = "; ".join(text for _, text in found) + "; see a dermatologist"
    return Decision(True, found[0][0], detail[0].upper() + detail[1:], tuple(r for r, _ in found))


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
