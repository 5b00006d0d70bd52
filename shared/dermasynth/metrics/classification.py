"""Classification metrics that tell the truth about rare classes, with bootstrap confidence intervals.

Point estimates come from scikit-learn. The confidence intervals come from a stratified bootstrap
(each resample keeps every class's support, so a rare class's recall is defined in every resample):
accuracy, balanced accuracy, macro-F1 and per-class recall/F1 are recomputed from each resample's
confusion matrix and one-vs-rest AUC from ranks (:func:`rank_auc`), both vectorised over resamples.
Intervals are the 2.5th and 97.5th percentiles.

Conventions (scikit-learn's): rows of the confusion matrix are true classes, columns predictions;
balanced accuracy is the mean recall over classes present in ``y_true``; macro-F1 averages the classes
present in ``y_true`` or predicted; undefined precision counts as 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, Field
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

CI_LEVEL = 0.95
_CHUNK = 100  # resamples per vectorised block (bounds memory on large test sets)


class Interval(BaseModel):
    """A two-sided confidence interval."""

    low: float
    high: float


class ClassMetrics(BaseModel):
    """One class, one-vs-rest."""

    precision: float
    recall: float
    f1: float
    support: int
    auc: float | None = Field(default=None, description="one-vs-rest ROC AUC; None when the class is absent")
    recall_ci: Interval | None = None
    f1_ci: Interval | None = None


class ClassificationMetrics(BaseModel):
    """Everything :func:`classification_metrics` measures."""

    n: int
    classes: list[str]
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    auc: float | None = Field(default=None, description="macro one-vs-rest ROC AUC over classes present")
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]] = Field(description="rows: true class, columns: predicted, in class order")
    ci: dict[str, Interval] = Field(default_factory=dict, description="95% bootstrap intervals by metric name")
    bootstrap: int = 0
    ci_level: float = CI_LEVEL


def classification_metrics(
    y_true: ArrayLike, y_prob: ArrayLike, classes: Sequence[str], *, bootstrap: int = 1000, seed: int = 0
) -> ClassificationMetrics:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support/AUC, confusion matrix, CIs.

    Args:
        y_true: true class indices, shape ``(N,)``.
        y_prob: class probabilities (or any scores), shape ``(N, K)``; the prediction is the argmax.
        classes: the K class names in index order.
        bootstrap: number of stratified bootstrap resamples for the 95% intervals; 0 skips them.
        seed: seeds the resampling.

    Raises:
        ValueError: on empty input, mismatched shapes, labels outside ``0..K-1`` or non-finite scores.
    """
    truth, prob = _validated(y_true, y_prob, classes, bootstrap)
    k = len(classes)
    labels = list(range(k))
    pred = prob.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    aucs = _per_class_auc(truth, prob, k)
    present_auc = [a for a in aucs if a is not None]
    per_class = {
        name: ClassMetrics(
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
            auc=aucs[i],
        )
        for i, name in enumerate(classes)
    }
    result = ClassificationMetrics(
        n=len(truth),
        classes=list(classes),
        accuracy=float(accuracy_score(truth, pred)),
        balanced_accuracy=_balanced_accuracy(truth, pred),
        macro_f1=float(f1_score(truth, pred, average="macro", zero_division=0)),
        auc=float(np.mean(present_auc)) if present_auc else None,
        per_class=per_class,
        confusion_matrix=confusion_matrix(truth, pred, labels=labels).tolist(),
        bootstrap=bootstrap,
    )
    if bootstrap:
        _add_intervals(result, truth, prob, np.random.default_rng(seed))
    return result


def _balanced_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    with warnings.catch_warnings():  # a predicted class absent from y_true is expected with rare classes
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(truth, pred))


def _validated(
    y_true: ArrayLike, y_prob: ArrayLike, classes: Sequence[str], bootstrap: int
) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true)
    prob = np.asarray(y_prob, dtype=np.float64)
    k = len(classes)
    if k < 2:
        raise ValueError(f"classes must name at least 2 classes, got {list(classes)}")
    if truth.ndim != 1 or truth.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array of class indices, got shape {truth.shape}")
    if prob.shape != (truth.size, k):
        raise ValueError(f"y_prob must have shape (N, K) = ({truth.size}, {k}), got {prob.shape}")
    if not np.issubdtype(truth.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices, got dtype {truth.dtype}")
    if truth.min() < 0 or truth.max() >= k:
        raise ValueError(f"y_true holds {truth.min()}..{truth.max()}; class indices must lie in 0..{k - 1}")
    if not np.isfinite(prob).all():
        raise ValueError("y_prob holds NaN or infinite scores")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 (no intervals) or a positive number of resamples, got {bootstrap}")
    return truth.astype(np.int64), prob


def _per_class_auc(truth: np.ndarray, prob: np.ndarray, k: int) -> list[float | None]:
    aucs: list[float | None] = []
    for c in range(k):
        positive = truth == c
        has_both = bool(positive.any() and (~positive).any())
        aucs.append(float(roc_auc_score(positive, prob[:, c])) if has_both else None)
    return aucs


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` ``(B, M)`` against boolean labels ``positive`` ``(B, M)``.

    The Mann-Whitney form (average ranks, so a tie counts one half), equal to scikit-learn's
    ``roc_auc_score`` row by row; NaN for a row without positives or negatives.
    """
    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1).astype(np.float64)
    n_neg = positive.shape[1] - n_pos
    u = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _macro_auc(truth: np.ndarray, prob: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Macro one-vs-rest AUC of each resample: ``truth`` ``(B, M)``, ``prob`` ``(B, M, K)``."""
    per_class = [rank_auc(prob[:, :, c], truth == c) for c, g in enumerate(groups) if 0 < g.size < truth.shape[1]]
    return np.mean(per_class, axis=0) if per_class else np.full(truth.shape[0], np.nan)


def stratified_resamples(truth: np.ndarray, k: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` stratified bootstrap resamples of the indices of ``truth`` ``(N,)``, shape ``(b, N)``.

    Each resample draws, with replacement, as many images of every class as the class has, so every
    class keeps its support (a rare class's recall is defined in every resample). Applying the same
    indices to the predictions of two models gives a paired bootstrap.
    """
    groups = [np.flatnonzero(truth == c) for c in range(k)]
    return np.concatenate([g[rng.integers(0, g.size, size=(b, g.size))] for g in groups if g.size], axis=1)


def confusion_stack(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices ``(B, K, K)`` of ``B`` rows of true and predicted class indices ``(B, M)``."""
    b = truth.shape[0]
    cells = truth * k + pred + (np.arange(b) * k * k)[:, None]
    return np.bincount(cells.ravel(), minlength=b * k * k).reshape(b, k, k)


def metrics_from_confusion(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised metrics of a stack of confusion matrices ``(B, K, K)``, by scikit-learn's conventions.

    Returns ``accuracy``, ``balanced_accuracy`` and ``macro_f1`` ``(B,)``, and per class ``(B, K)``:
    ``precision`` (0 when the class is never predicted), ``recall`` (NaN when it is absent), ``f1``
    (0 when it is neither present nor predicted) and ``class_accuracy`` (one-vs-rest: (TP + TN) / N).
    """
    tp = np.diagonal(cms, axis1=1, axis2=2).astype(np.float64)
    rows = cms.sum(axis=2).astype(np.float64)
    cols = cms.sum(axis=1).astype(np.float64)
    total = rows.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / rows
        precision = np.where(cols > 0, tp / np.where(cols > 0, cols, 1), 0.0)
        f1_den = rows + cols
        f1 = np.where(f1_den > 0, 2 * tp / np.where(f1_den > 0, f1_den, 1), np.nan)
    return {
        "accuracy": tp.sum(axis=1) / total,
        "balanced_accuracy": np.nanmean(recall, axis=1),
        "macro_f1": np.nanmean(f1, axis=1),
        "precision": precision,
        "recall": recall,
        "f1": np.nan_to_num(f1, nan=0.0),
        "class_accuracy": (total[:, None] - rows - cols + 2 * tp) / total[:, None],
    }


def _add_intervals(
    result: ClassificationMetrics, truth: np.ndarray, prob: np.ndarray, rng: np.random.Generator
) -> None:
    k = len(result.classes)
    pred = prob.argmax(axis=1)
    groups = [np.flatnonzero(truth == c) for c in range(k)]
    draws: dict[str, list[np.ndarray]] = {
        "accuracy": [],
        "balanced_accuracy": [],
        "macro_f1": [],
        "recall": [],
        "f1": [],
    }
    aucs: list[np.ndarray] = []
    remaining = result.bootstrap
    while remaining:
        b = min(_CHUNK, remaining)
        remaining -= b
        idx = stratified_resamples(truth, k, b, rng)
        values = metrics_from_confusion(confusion_stack(truth[idx], pred[idx], k))
        for name, parts in draws.items():
            parts.append(values[name])
        aucs.append(_macro_auc(truth[idx], prob[idx], groups))
    stacked = {name: np.concatenate(parts) for name, parts in draws.items()}
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        result.ci[name] = bootstrap_interval(stacked[name])
    if result.auc is not None:
        result.ci["auc"] = bootstrap_interval(np.concatenate(aucs))
    for c, name in enumerate(result.classes):
        if groups[c].size:
            result.per_class[name].recall_ci = bootstrap_interval(stacked["recall"][:, c])
            result.per_class[name].f1_ci = bootstrap_interval(stacked["f1"][:, c])


def bootstrap_interval(values: np.ndarray) -> Interval:
    """The central 95% interval (2.5th and 97.5th percentiles, NaNs ignored) of bootstrap draws."""
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return Interval(low=float(low), high=float(high))
