from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sklearn.metrics import confusion_matrix

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.classifier.evaluate import EvaluationReport, evaluate_run, load_predictions
from dermasynth.config import get_settings
from dermasynth.data.decoded_cache import open_decoded_cache
from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore, ObjectNotFound, PrefixedStore


@pytest.fixture(scope="module")
def run(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> PrefixedStore:
    store = PrefixedStore(FilesystemStore(tmp_path_factory.mktemp("store")), "runs/job-1")
    config = TrainConfig(
        model="mobilenet_v3_small", image_size=16, epochs=1, batch_size=8, num_workers=0, max_steps_per_epoch=2
    )
    fit(config, demo_dataset, store)
    return store


def test_evaluate_run_writes_metrics_and_figures(run: PrefixedStore, demo_dataset: Manifest) -> None:
    report = evaluate_run(run, demo_dataset, "test", bootstrap=100)
    test_rows = demo_dataset.in_split("test")
    assert report.n == len(test_rows) and report.split == "test" and report.checkpoint == "best"
    assert sum(c.support for c in report.per_class.values()) == len(test_rows)
    assert {k for k in ("metrics.json", "confusion_matrix.png", "per_class.png")} <= set(run.list())
    stored = json.loads(run.get_bytes("metrics.json"))
    assert EvaluationReport.model_validate(stored) == report
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "auc", "ci"} <= stored.keys()
    assert run.get_bytes("per_class.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.sources == {"generated": len(test_rows)} and report.excluded_synthetic == 0


def test_tta_and_prefix(run: PrefixedStore, demo_dataset: Manifest) -> None:
    report = evaluate_run(run, demo_dataset, "val", tta=True, bootstrap=0, which="latest", prefix="eval/val")
    assert report.tta and report.split == "val" and report.ci == {}
    assert {"eval/val/metrics.json", "eval/val/confusion_matrix.png", "eval/val/per_class.png"} <= set(run.list())


def test_synthetic_rows_are_never_evaluated(run: PrefixedStore, demo_dataset: Manifest, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(demo_dataset.root, root)
    first = demo_dataset.in_split("train")[0]
    (root / "syn").mkdir()
    shutil.copy(root / first.image, root / "syn" / "s0.png")
    synthetic = replace(first, image="syn/s0.png", source="synthetic", lesion_id="SYN_0", generator="g")
    manifest = Manifest(demo_dataset.records, root).with_records([synthetic])
    report = evaluate_run(run, manifest, "train", bootstrap=0, prefix="eval/train")
    assert report.excluded_synthetic == 1 and report.n == len(demo_dataset.in_split("train"))
    assert "synthetic" not in report.sources


def test_bad_requests_are_refused(run: PrefixedStore, demo_dataset: Manifest) -> None:
    with pytest.raises(ValueError, match="split 'holdout' is not one of"):
        evaluate_run(run, demo_dataset, "holdout")
    relabelled = Manifest(
        [replace(r, label="unknown") if r.split == "test" else r for r in demo_dataset.records], demo_dataset.root
    )
    with pytest.raises(ValueError, match=r"labels \['unknown'\] are not among the model's classes"):
        evaluate_run(run, relabelled, "test", bootstrap=0)


def test_predictions_are_kept_for_paired_comparisons(run: PrefixedStore, demo_dataset: Manifest) -> None:
    report = evaluate_run(run, demo_dataset, "test", bootstrap=0, prefix="eval/kept", save_predictions=True)
    kept = load_predictions(run, "eval/kept")
    test_rows = demo_dataset.in_split("test")
    assert kept.images == [r.image for r in test_rows] and kept.classes == report.classes
    assert kept.probabilities.shape == (len(test_rows), len(report.classes))
    assert kept.targets.tolist() == [report.classes.index(r.label) for r in test_rows]
    assert (
        confusion_matrix(kept.targets, kept.probabilities.argmax(1), labels=range(len(report.classes))).tolist()
        == report.confusion_matrix
    )
    with pytest.raises(ObjectNotFound):
        load_predictions(run, "eval/val")


def test_decoded_cache_and_per_image_evaluation_agree(
    run: PrefixedStore, demo_dataset: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERMASYNTH_CACHE_ROOT", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        per_image = evaluate_run(run, demo_dataset, "test", bootstrap=0, prefix="a/", save_predictions=True)
        assert not list((tmp_path / "cache").rglob("*.npy"))  # evaluation never builds a cache for itself
        open_decoded_cache(demo_dataset, 16, cache_root=tmp_path / "cache", progress=False)
        cached = evaluate_run(run, demo_dataset, "test", bootstrap=0, prefix="b/", save_predictions=True)
    finally:
        get_settings.cache_clear()
    a, b = load_predictions(run, "a/"), load_predictions(run, "b/")
    assert a.images == b.images and (a.targets == b.targets).all()
    assert abs(a.probabilities - b.probabilities).max() < 1e-5
    assert cached.balanced_accuracy == per_image.balanced_accuracy
