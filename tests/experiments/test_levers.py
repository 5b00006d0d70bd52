"""Every lever of issue 18 as an arm, on tiny generated data: ratio sweep, truncation, synthetic loss weight,
pre-training then real-only fine-tuning, filtered synthesis, a second GAN; equal compute; rare-class answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dermasynth.classifier.engine import TrainResult
from dermasynth.data.manifest import Manifest
from dermasynth.experiments.config import ExperimentConfig
from dermasynth.experiments.keys import dataset_key
from dermasynth.experiments.report import ExperimentReport
from dermasynth.experiments.report_markdown import SECTIONS
from dermasynth.experiments.runner import ExperimentResult, run_experiment
from dermasynth.storage import FilesystemStore
from tests.experiments.test_runner import TINY_GAN, TINY_TRAIN

RARE = ["akiec", "df", "vasc"]
LEVER_ARMS: list[Any] = [
    "sampler",
    {"name": "truncated", "synthetic": True, "balance": "sampler", "synthesis": {"truncation": 0.5}},
    {"name": "weighted", "synthetic": True, "balance": "sampler", "synthetic_weight": 0.25},
    {"name": "pretrained", "synthetic": True, "balance": "sampler", "pretrain_fraction": 0.5},
    {"name": "filtered", "synthetic": True, "balance": "sampler", "synthesis": {"min_confidence": 0.1}},
    {"name": "gan_32px", "synthetic": True, "balance": "sampler", "gan": {"image_size": 32, "steps": 4}},
]


def lever_config(**changes: Any) -> ExperimentConfig:
    options: dict[str, Any] = {
        "name": "levers",
        "arms": LEVER_ARMS,
        "ratio_sweep": {"ratios": [1, 2], "classes": RARE},
        "backbones": ["mobilenet_v3_small"],
        "seeds": [0],
        "train": {**TINY_TRAIN, "epochs": 2},
        "gan": TINY_GAN,
        "synthesis": {"mode": "balance", "ratio": 0.5},
        "evaluation": {"bootstrap": 200},
        "quality": {"samples_per_class": 4},
    }
    options.update(changes)
    return ExperimentConfig.model_validate(options)


@pytest.fixture(scope="module")
def levers(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExperimentResult]:
    folder = tmp_path_factory.mktemp("levers")
    return folder, run_experiment(lever_config(), demo_dataset, FilesystemStore(folder), folder)


def test_every_lever_arm_runs_with_equal_compute(levers: tuple[Path, ExperimentResult], demo_dataset: Manifest) -> None:
    folder, result = levers
    by_arm = {r.arm: r for r in result.runs}
    assert set(by_arm) == {
        "sampler",
        "truncated",
        "weighted",
        "pretrained",
        "filtered",
        "gan_32px",
        "ratio_1",
        "ratio_2",
    }
    assert {r.classifier_steps for r in result.runs} == {2 * TINY_TRAIN["max_steps_per_epoch"]}
    # two GANs (the default one and the 32 px one), one synthetic dataset per distinct plan
    assert len(set(result.gans.values())) == 2 and len(list((folder / "gans").iterdir())) == 2
    assert result.synthetics["weighted"] == result.synthetics["pretrained"]
    assert len(set(result.synthetics.values())) == 6
    real = dataset_key(demo_dataset)
    for arm, key in result.synthetics.items():
        manifest = Manifest.read(folder / "synthetic" / key)
        # synthetic images never reach validation or test: both splits are the real ones, unchanged
        for split in ("val", "test"):
            assert manifest.in_split(split) == demo_dataset.in_split(split), (arm, split)
        rows = [r for r in manifest.records if r.source == "synthetic"]
        assert rows and all(r.split == "train" for r in rows)
        if arm == "truncated":
            assert {r.truncation for r in rows} == {0.5}
        if arm == "filtered":
            assert all(r.filter_confidence is not None and r.filter_confidence >= 0.1 for r in rows)
        else:
            assert all(r.filter_confidence is None for r in rows)
    real_counts = demo_dataset.class_counts("train")
    for ratio in (1, 2):
        added = {c: n - real_counts[c] for c, n in by_arm[f"ratio_{ratio}"].train_counts.items()}
        assert added == {c: ratio * real_counts[c] if c in RARE else 0 for c in real_counts}
    # pre-training on real + GAN images, then fine-tuning on the real images only, from those weights
    pretrained = by_arm["pretrained"]
    assert pretrained.pretrain_run is not None and pretrained.dataset == result.synthetics["pretrained"]
    assert "synthetic" not in pretrained.train_sources
    first = TrainResult.model_validate_json((folder / "runs" / pretrained.pretrain_run / "result.json").read_text())
    assert first.train_sources.get("synthetic", 0) > 0 and first.epochs_run == 1 and pretrained.epochs_run == 1
    assert (folder / "pretrained" / f"{pretrained.pretrain_run}.pth").is_file()
    weighted = TrainResult.model_validate_json(
        (folder / by_arm["weighted"].evaluation.split("/eval/")[0] / "result.json").read_text()
    )
    assert weighted.config.synthetic_weight == 0.25
    assert by_arm["sampler"].dataset == real


def test_the_report_answers_per_rare_class_and_lists_the_gan_cost(levers: tuple[Path, ExperimentResult]) -> None:
    folder, result = levers
    report = ExperimentReport.model_validate_json((folder / "report" / "report.json").read_text())
    arms = {a.name for a in report.arms} - {"sampler"}
    present = [c for c in RARE if c in report.classes]
    assert {(a.arm, a.label) for a in report.rare_classes} == {(arm, c) for arm in arms for c in present}
    for answer in report.rare_classes:
        assert answer.baseline == "sampler" and answer.answer in ("yes", "no", "too few test images")
        if answer.answer == "yes":
            assert answer.recall is not None and answer.recall.difference >= 0.05 and answer.recall.ci.low > 0
    assert set(report.costs) == arms and all(c.gan_seconds > 0 and c.gan_steps > 0 for c in report.costs.values())
    assert report.costs["filtered"].filter_seconds > 0 and report.costs["weighted"].filter_seconds == 0
    assert report.syntheses["filtered"].filter is not None
    assert set(report.gan_quality) == set(result.gans.values())
    for quality in report.gan_quality.values():
        assert "not measured" in quality.standard_feature_space
    assert any(line.startswith("[mobilenet_v3_small] ") and any(c in line for c in present) for line in result.headline)
    markdown = (folder / "report" / "report.md").read_text()
    assert [line[3:] for line in markdown.splitlines() if line.startswith("## ")] == list(SECTIONS)
    assert "Rule: 'yes' when" in markdown and "GAN train s" in markdown


def test_arms_of_unequal_compute_are_refused(demo_dataset: Manifest, tmp_path: Path) -> None:
    config = lever_config(
        arms=["sampler", "gan_sampler"],
        ratio_sweep=None,
        train={**TINY_TRAIN, "max_steps_per_epoch": None},
        quality={"enabled": False},
    )
    with pytest.raises(ValueError, match="different numbers of steps"):
        run_experiment(config, demo_dataset, FilesystemStore(tmp_path), tmp_path)


def test_lever_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="act on GAN images"):
        lever_config(arms=[{"name": "x", "synthetic_weight": 0.5}])
    with pytest.raises(ValidationError, match="leaves a phase without an epoch"):
        lever_config(train={**TINY_TRAIN, "epochs": 1})
    with pytest.raises(ValidationError, match="not GAN options"):
        lever_config(arms=[{"name": "x", "synthetic": True, "gan": {"size": 32}}])
    with pytest.raises(ValidationError, match="extra"):
        lever_config(arms=[{"name": "x", "synthetic": True, "synthesis": {"ratios": 2}}])
    sweep = lever_config(arms=["sampler"], ratio_sweep={"ratios": [0.5, 4]})
    assert [a.name for a in sweep.arms] == ["sampler", "ratio_0_5", "ratio_4"]
    assert sweep.synthesis_plan(sweep.arm("ratio_4")).ratio == 4
    assert ("ratio_0_5", "sampler") in sweep.pairs()
    again = ExperimentConfig.model_validate(sweep.model_dump(mode="json"))  # experiment.json round trip
    assert again == sweep
