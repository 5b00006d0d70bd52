"""Issue 12, findings 8 and 9: job parameters cannot ask for unbounded work or name the worker's files."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dermasynth.gan.synthesis import SynthesisPlan
from dermasynth.jobs import params as job_params
from dermasynth.jobs.params import (
    MAX_SYNTHETIC_PER_CLASS,
    ExperimentParams,
    SynthesisParams,
    TrainingParams,
)

HAM10000_TRAIN = {"akiec": 229, "bcc": 360, "bkl": 769, "df": 80, "mel": 779, "nv": 4693, "vasc": 99}


def test_balance_with_a_large_ratio_is_refused_for_the_dataset_it_names() -> None:
    plan = SynthesisPlan(mode="balance", ratio=100)  # valid alone: ratio <= 100
    SynthesisParams(dataset_id="ds-1", plan=plan)
    with pytest.raises(ValueError, match=r"469220 synthetic images of class 'df'.*at most 100000"):
        job_params.check_synthesis_budget(plan, HAM10000_TRAIN)


def test_effective_counts_within_the_limits_are_returned() -> None:
    counts = job_params.check_synthesis_budget(SynthesisPlan(mode="balance", ratio=2), HAM10000_TRAIN)
    assert counts["nv"] == 4693 and counts["df"] == 2 * 4693 - 80
    assert max(counts.values()) <= MAX_SYNTHETIC_PER_CLASS


def test_the_total_is_bounded_as_well_as_each_class() -> None:
    seven_classes = {f"c{i}": 10 for i in range(7)}
    with pytest.raises(ValueError, match="in all"):
        job_params.check_synthesis_budget(SynthesisPlan(mode="at_least", at_least=50_000), seven_classes)


@pytest.mark.parametrize("option", ["snapshot_every", "grid_every", "checkpoint_every", "log_every"])
def test_every_every_option_has_a_floor_from_the_step_count(option: str) -> None:
    sparse = {name: 1_000_000 for name in ("snapshot_every", "grid_every", "checkpoint_every", "log_every")}
    with pytest.raises(ValidationError, match=f"gan.{option} 1 with 1000000 steps"):
        SynthesisParams(dataset_id="ds-1", gan={**sparse, "steps": 1_000_000, option: 1})
    SynthesisParams(dataset_id="ds-1", gan={**sparse, "steps": 1_000_000})
    SynthesisParams(dataset_id="ds-1", gan={"steps": 12, option: 1})  # small runs keep fine-grained outputs


def test_experiments_get_the_same_floors() -> None:
    with pytest.raises(ValidationError, match="snapshot_every"):
        ExperimentParams(dataset_id="ds-1", config={"gan": {"steps": 1_000_000, "snapshot_every": 1}})


@pytest.mark.parametrize("weights", [".bashrc", "model.ckpt", "checkpoint", "/etc/passwd", "../x.pth", "IMAGENET9K"])
def test_weights_over_the_api_are_only_torchvision_names(weights: str) -> None:
    with pytest.raises(ValidationError, match="only the torchvision weights names of resnet18"):
        TrainingParams(dataset_id="ds-1", config={"weights": weights})
    with pytest.raises(ValidationError, match="only the torchvision weights names"):
        ExperimentParams(dataset_id="ds-1", config={"train": {"weights": weights}})


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT", None])
def test_known_weights_names_are_accepted(weights: Any) -> None:
    assert TrainingParams(dataset_id="ds-1", config={"weights": weights}).config.weights == weights
