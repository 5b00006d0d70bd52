"""What is in a dataset: counts by class, split and source, and a class-distribution chart."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dermasynth.data.manifest import SPLITS, Manifest
from dermasynth.data.schemas import DatasetStats


def dataset_stats(manifest: Manifest) -> DatasetStats:
    """Counts of images, lesions (real and generated only), classes, splits and sources."""
    return DatasetStats(
        images=len(manifest),
        lesions=len({r.lesion_id for r in manifest if r.source != "synthetic"}),
        classes=manifest.class_counts(),
        splits=manifest.split_counts(),
        sources=dict(sorted(Counter(r.source for r in manifest).items())),
    )


def plot_class_distribution(manifest: Manifest, path: Path, title: str = "Images per class") -> Path:
    """Write a bar chart of images per class, stacked by split, with synthetic images hatched."""
    classes = manifest.classes
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    bottom = [0] * len(classes)
    for split in SPLITS:
        for source, hatch in (("real", ""), ("generated", ""), ("synthetic", "//")):
            counts = Counter(r.label for r in manifest if r.split == split and r.source == source)
            heights = [counts[c] for c in classes]
            if not any(heights):
                continue
            ax.bar(
                classes,
                heights,
                bottom=bottom,
                hatch=hatch,
                edgecolor="black",
                linewidth=0.4,
                label=f"{split} ({source})",
            )
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, total in enumerate(bottom):
        ax.annotate(str(total), (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
