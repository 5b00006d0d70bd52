"""The experiment report's figures as PNG bytes: class distribution before and after synthesis, per-class F1
of two arms, and the backbone comparison. Confusion matrices come from :mod:`dermasynth.metrics.figures`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from dermasynth.metrics.figures import figure_png
from dermasynth.metrics.pooled import Estimate


@dataclass(frozen=True)
class Series:
    """One group of bars: a label and an estimate (with its interval) per category."""

    label: str
    values: Sequence[Estimate | None]


def _errors(values: Sequence[Estimate | None]) -> np.ndarray:
    """Asymmetric error bars (2, n) from the estimates' intervals (0 where there is none)."""
    rows = [
        [e.value - e.ci.low, e.ci.high - e.value] if e is not None and e.ci is not None else [0.0, 0.0] for e in values
    ]
    return np.array(rows, dtype=np.float64).T.clip(min=0)


def _grouped_bars(axes: plt.Axes, categories: Sequence[str], series: Sequence[Series]) -> None:
    x = np.arange(len(categories))
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        heights = [e.value if e is not None else 0.0 for e in s.values]
        axes.bar(
            x + (i - (len(series) - 1) / 2) * width, heights, width, yerr=_errors(s.values), capsize=2, label=s.label
        )
    axes.set_xticks(x, list(categories))
    axes.set_ylim(0, 1.05)
    axes.grid(axis="y", alpha=0.3)


def class_distribution_png(before: Mapping[str, int], after: Mapping[str, int] | None, title: str = "") -> bytes:
    """Training images per class before (real) and after synthesis (real + GAN images), counts on the bars."""
    classes = sorted(set(before) | set(after or {}))
    x = np.arange(len(classes))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(classes) + 2), 4.2))
    groups = [("before: real", before)] + ([("after: real + GAN", after)] if after is not None else [])
    width = 0.8 / len(groups)
    for i, (label, counts) in enumerate(groups):
        heights = [counts.get(c, 0) for c in classes]
        bars = axes.bar(
            x + (i - (len(groups) - 1) / 2) * width,
            heights,
            width,
            label=label,
            hatch="//" if i else "",
            edgecolor="black",
            linewidth=0.4,
        )
        axes.bar_label(bars, fontsize=7)
    axes.set_xticks(x, classes)
    axes.set_ylabel("training images")
    axes.legend()
    axes.set_title(title or "class distribution of the training split before and after synthesis")
    return figure_png(figure)


def per_class_f1_png(classes: Sequence[str], series: Sequence[Series], title: str = "") -> bytes:
    """Per-class F1 of each series (e.g. baseline and augmented), with 95% interval bars."""
    figure, axes = plt.subplots(figsize=(max(6.0, 1.0 * len(classes) + 2), 4))
    _grouped_bars(axes, classes, series)
    axes.set_ylabel("F1 (95% CI)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.set_title(title or "per-class F1")
    return figure_png(figure)


def backbone_png(arms: Sequence[str], metrics: Mapping[str, Sequence[Series]], title: str = "") -> bytes:
    """One panel per metric: a group of bars per arm, one bar per backbone, with 95% interval bars."""
    figure, panels = plt.subplots(
        1, len(metrics), figsize=(max(6.0, 1.3 * len(arms) + 2) * len(metrics), 4), squeeze=False
    )
    for axes, (name, series) in zip(panels[0], metrics.items(), strict=True):
        _grouped_bars(axes, arms, series)
        axes.set_ylabel(f"{name} (95% CI)")
        axes.tick_params(axis="x", labelrotation=20)
    panels[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle(title or "backbones compared")
    return figure_png(figure)
