"""Evaluation figures as PNG bytes: the confusion matrix and per-class precision/recall/F1 bars."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dermasynth.metrics.classification import ClassificationMetrics


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (120 dpi, tight box); the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def confusion_matrix_png(metrics: ClassificationMetrics, title: str = "") -> bytes:
    """Row-normalised confusion matrix (recall on the diagonal), each cell also giving its image count."""
    counts = np.asarray(metrics.confusion_matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(metrics.classes)
    figure, axes = plt.subplots(figsize=(1.1 * k + 2, 1.0 * k + 1.5))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    axes.set_xticks(range(k), metrics.classes, rotation=45, ha="right")
    axes.set_yticks(range(k), [f"{c} (n={int(n)})" for c, n in zip(metrics.classes, rows[:, 0], strict=True)])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            axes.text(
                j,
                i,
                f"{shares[i, j]:.2f}\n{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    axes.set_title(title or f"confusion matrix (balanced accuracy {metrics.balanced_accuracy:.3f})")
    return figure_png(figure)


def per_class_png(metrics: ClassificationMetrics, title: str = "") -> bytes:
    """Precision, recall (with its bootstrap interval when present) and F1 per class, with supports."""
    classes = metrics.classes
    x = np.arange(len(classes))
    width = 0.27
    figure, axes = plt.subplots(figsize=(max(6.0, 1.0 * len(classes) + 2), 4))
    per = [metrics.per_class[c] for c in classes]
    recall = np.array([m.recall for m in per])
    errors = np.array(
        [[m.recall - m.recall_ci.low, m.recall_ci.high - m.recall] if m.recall_ci else [0.0, 0.0] for m in per]
    ).T.clip(min=0)
    axes.bar(x - width, [m.precision for m in per], width, label="precision")
    axes.bar(x, recall, width, yerr=errors, capsize=3, label="recall (95% CI)")
    axes.bar(x + width, [m.f1 for m in per], width, label="F1")
    axes.set_xticks(x, [f"{c}\nn={m.support}" for c, m in zip(classes, per, strict=True)])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.set_title(title or f"per class (macro-F1 {metrics.macro_f1:.3f})")
    return figure_png(figure)
