from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from dermasynth.data.demo import class_counts, make_demo_dataset, render_lesion
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest
from dermasynth.labels import HAM10000_CLASSES, HAM10000_COUNTS


def test_counts_follow_ham10000_proportions() -> None:
    counts = class_counts(10_015)
    assert counts == HAM10000_COUNTS
    small = class_counts(100)
    assert sum(small.values()) == 100 and min(small.values()) >= 4
    with pytest.raises(ValueError, match="too small"):
        class_counts(10)


@pytest.mark.parametrize("label", HAM10000_CLASSES)
@pytest.mark.parametrize("size", [16, 32, 64])
def test_render_is_deterministic_and_4_by_3(label: str, size: int) -> None:
    a = render_lesion(label, 3, 0, size)
    assert a.size == (round(size * 4 / 3), size) and a.mode == "RGB"
    assert a.tobytes() == render_lesion(label, 3, 0, size).tobytes()
    assert a.tobytes() != render_lesion(label, 3, 1, size).tobytes()  # another view of the same lesion


def test_render_refuses_unknown_labels() -> None:
    with pytest.raises(ValueError, match="no generator"):
        render_lesion("psoriasis", 0, 0)


def test_dataset_is_marked_generated_and_split_by_lesion(demo_dataset: Manifest) -> None:
    assert {r.source for r in demo_dataset} == {"generated"}
    assert len(demo_dataset) == 140
    assert set(demo_dataset.classes) == set(HAM10000_CLASSES)
    assert len({r.lesion_id for r in demo_dataset}) < len(demo_dataset)  # some lesions have two views
    assert all(demo_dataset.class_counts(s).keys() == set(HAM10000_CLASSES) for s in ("train", "val", "test"))


def test_a_simple_classifier_can_tell_the_classes_apart(tmp_path: Path) -> None:
    manifest = make_demo_dataset(tmp_path, count=700, size=32, seed=3)

    def features(split: str) -> tuple[np.ndarray, list[str]]:
        rows = manifest.in_split(split)
        pixels = [
            np.asarray(load_rgb(manifest.path_of(r)).resize((16, 12)), dtype=np.float32).ravel() / 255 for r in rows
        ]
        return np.stack(pixels), [r.label for r in rows]

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(x_train, y_train)
    score = balanced_accuracy_score(y_test, model.predict(x_test))
    assert score > 0.5, f"balanced accuracy {score:.2f} is too close to chance (0.14)"
