from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dermasynth.metrics.classification import classification_metrics
from dermasynth.metrics.figures import confusion_matrix_png, per_class_png


def test_figures_are_png_images() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 60)
    y_prob = rng.dirichlet(np.ones(7), 60)
    metrics = classification_metrics(y_true, y_prob, ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], bootstrap=50)
    for png in (confusion_matrix_png(metrics), per_class_png(metrics, "title")):
        image = Image.open(io.BytesIO(png))
        image.load()
        assert image.format == "PNG" and image.width > 300 and image.height > 200
