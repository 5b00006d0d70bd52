from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dermasynth.experiments.config import (
    STANDARD_ARMS,
    ExperimentConfig,
    read_experiment_file,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


def test_standard_arms_by_name_and_custom_arms() -> None:
    custom = {"name": "gan_aug", "synthetic": True, "balance": "sampler", "augment": True}
    config = ExperimentConfig.model_validate({"arms": ["real", "gan_sampler", custom]})
    assert config.arms[:2] == [STANDARD_ARMS["real"], STANDARD_ARMS["gan_sampler"]]
    assert config.arm("gan_aug").label() == "real + GAN images, WeightedRandomSampler, standard augmentation"
    assert config.needs_gan and config.pairs() == [("gan_sampler", "real")]
    assert config.figure_pair() == ("real", "gan_sampler")
    assert not ExperimentConfig.model_validate({"arms": ["real", "loss"]}).needs_gan


def test_per_run_options_come_from_the_grid() -> None:
    config = ExperimentConfig.model_validate(
        {
            "arms": ["sampler", "augment"],
            "backbones": ["vgg16"],
            "seeds": [4],
            "train": {"epochs": 3, "augment": {"rotation_degrees": 90}},
        }
    )
    run = config.train_config(config.arm("augment"), "vgg16", 4)
    assert (run.model, run.seed, run.balance, run.epochs) == ("vgg16", 4, "none", 3)
    assert run.augment.enabled and run.augment.rotation_degrees == 90
    assert not config.train_config(config.arm("sampler"), "vgg16", 4).augment.enabled
    assert config.train_config(config.arm("sampler"), "vgg16", 4).balance == "sampler"
    # the config survives a round trip through experiment.json
    assert ExperimentConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arms": ["real", "gan2"]}, "arm 'gan2' is not a standard arm"),
        ({"arms": ["real", "real"]}, r"arms \['real'\] are listed twice"),
        ({"arms": []}, "at least one arm"),
        ({"backbones": ["resnet9000"]}, "'resnet9000' is not a torchvision classification model"),
        ({"seeds": [1, 1]}, "must be distinct"),
        ({"train": {"model": "vgg16"}}, r"train must not set \['model'\]"),
        ({"comparisons": [("gan", "real")], "arms": ["real", "sampler"]}, r"name arms \['gan'\] that are not run"),
        ({"comparisons": [("real", "real")]}, "two different arms"),
        ({"evaluation": {"bootstrap": 10}}, "greater than or equal to 100"),
        ({"arms": [{"name": "Bad Name"}]}, "should match pattern"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExperimentConfig.model_validate(options)


@pytest.mark.parametrize("name", ["tiny.yaml", "cpu-ham10000.yaml", "gpu-gan-small.yaml", "gpu-full.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config, source = read_experiment_file(CONFIGS / name)
    assert source is not None
    names = {a.name for a in config.arms}
    assert names >= ({"sampler", "gan_sampler"} if name != "tiny.yaml" else {"real", "sampler", "gan", "gan_sampler"})
    if name != "tiny.yaml":  # issue 18: every lever is an arm, at least 3 seeds, the sampler is the baseline
        arms = config.arms
        assert len(config.seeds) >= 3 and config.baseline_arm == "sampler"
        assert any(a.synthesis and "min_confidence" in a.synthesis for a in arms)
        assert any(a.synthesis and "truncation" in a.synthesis for a in arms)
        assert any(a.synthetic_weight != 1 for a in arms) and any(a.pretrain_fraction for a in arms)
        assert len([a for a in arms if a.synthesis and a.synthesis.get("mode") == "real_ratio"]) >= 2
        assert name == "cpu-ham10000.yaml" or any(a.gan and a.gan["image_size"] >= 224 for a in arms)
    if name == "gpu-full.yaml":
        assert {"vgg16", "resnet50", "efficientnet_b0"} <= set(config.backbones) and len(config.seeds) == 3
        assert config.train.image_size == 224


def test_config_files_read_data_paths_from_their_folder(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "e", "data": {"dataset": "../data"}, "arms": ["real", "sampler"]}))
    config, source = read_experiment_file(path)
    assert config.name == "e" and source is not None and source.dataset == tmp_path / "cfg" / ".." / "data"
    path.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="is not valid YAML"):
        read_experiment_file(path)
