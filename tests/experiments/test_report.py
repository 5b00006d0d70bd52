from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dermasynth.classifier.evaluate import SplitPredictions
from dermasynth.data.manifest import Manifest
from dermasynth.experiments.config import ExperimentConfig
from dermasynth.experiments.report import ReportInputs, RunRecord, build_report, write_report
from dermasynth.experiments.report_markdown import SECTIONS
from dermasynth.storage import FilesystemStore


def _predictions(manifest: Manifest, error_rate: float, seed: int) -> SplitPredictions:
    """Probabilities of a classifier that is wrong on a share ``error_rate`` of the test images."""
    rows = manifest.in_split("test")
    classes = manifest.classes
    truth = np.array([classes.index(r.label) for r in rows])
    rng = np.random.default_rng(seed)
    predicted = np.where(rng.random(truth.size) < error_rate, (truth + 1) % len(classes), truth)
    return SplitPredictions([r.image for r in rows], truth, np.eye(len(classes))[predicted], classes)


def _run(arm: str, backbone: str, seed: int) -> RunRecord:
    return RunRecord(
        arm=arm,
        backbone=backbone,
        seed=seed,
        key=f"{arm}-{backbone}-{seed}",
        dataset="d",
        best_epoch=1,
        epochs_run=1,
        best_val_balanced_accuracy=0.5,
        train_seconds=1.0,
        train_counts={},
        train_sources={},
        evaluation="x",
        accuracy=0.5,
        balanced_accuracy=0.5,
        macro_f1=0.5,
    )


def _inputs(manifest: Manifest, error_rates: dict[tuple[str, str], float]) -> ReportInputs:
    config = ExperimentConfig.model_validate(
        {
            "arms": [{"name": "crippled"}, {"name": "healthy", "balance": "sampler"}],
            "backbones": ["vgg16", "resnet18"],
            "seeds": [0, 1],
            "comparisons": [("healthy", "crippled")],
            "evaluation": {"bootstrap": 300, "min_support": 5},
        }
    )
    runs = [
        _run(arm, backbone, seed)
        for backbone in config.backbones
        for arm in ("crippled", "healthy")
        for seed in config.seeds
    ]
    predictions = {
        r.key: _predictions(manifest, error_rates[r.arm, r.backbone], 10 * r.seed + len(r.arm)) for r in runs
    }
    return ReportInputs(config=config, manifest=manifest, dataset="d", runs=runs, predictions=predictions)


def test_a_crippled_arm_is_flagged_and_reported(demo_dataset: Manifest, tmp_path: Path) -> None:
    rates = {
        ("crippled", "vgg16"): 0.7,
        ("healthy", "vgg16"): 0.0,
        ("crippled", "resnet18"): 0.7,
        ("healthy", "resnet18"): 0.0,
    }
    written = write_report(FilesystemStore(tmp_path), _inputs(demo_dataset, rates))
    report = written.report
    for entry in report.comparisons:
        assert entry.comparison.overall["balanced_accuracy"].verdict == "better"
        assert entry.comparison.per_class["nv"]["recall"].verdict == "better"
    assert written.headline[0].startswith("only 2 seed(s) per arm")  # fewer than 3 seeds: said first
    assert written.headline[1].startswith("[vgg16] balanced accuracy: healthy better than crippled: +")
    # the same error rate on both backbones: the backbones are not told apart
    assert {e.comparison.overall["balanced_accuracy"].verdict for e in report.backbone_comparisons} == {
        "cannot be told apart"
    }
    healthy = report.summary("healthy", "vgg16").metrics
    assert healthy.runs == 2 and healthy.overall["accuracy"].value == 1.0 and healthy.overall["accuracy"].seed_sd == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "**healthy better**" in markdown and all(f"## {s}" in markdown for s in SECTIONS)
    assert {"report.md", "report.json", "backbones.png", "f1_vgg16.png", "confusion_crippled_resnet18.png"} <= set(
        written.files
    )


def test_runs_on_other_test_images_are_refused(demo_dataset: Manifest) -> None:
    rates = dict.fromkeys(
        [("crippled", "vgg16"), ("healthy", "vgg16"), ("crippled", "resnet18"), ("healthy", "resnet18")], 0.1
    )
    inputs = _inputs(demo_dataset, rates)
    key = inputs.runs[-1].key
    shifted = inputs.predictions[key]
    inputs.predictions[key] = SplitPredictions(
        shifted.images[1:] + shifted.images[:1], shifted.targets, shifted.probabilities, shifted.classes
    )
    with pytest.raises(ValueError, match="evaluated on other images"):
        build_report(inputs)
