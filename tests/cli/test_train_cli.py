from __future__ import annotations

import inspect
import json
from enum import StrEnum
from pathlib import Path

from typer.testing import CliRunner

from dermasynth.classifier.config import TrainConfig
from dermasynth.cli import app
from dermasynth.cli.train import train as train_command
from dermasynth.data.manifest import Manifest

runner = CliRunner()
FAST = [
    "--model",
    "mobilenet_v3_small",
    "--image-size",
    "16",
    "--batch-size",
    "8",
    "--max-steps-per-epoch",
    "2",
    "--num-workers",
    "0",
]


def test_train_then_resume_then_refuse_overwrite(demo_dataset: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(demo_dataset.root), "--out", str(out), "--epochs", "1", *FAST, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 1 and summary["config"]["balance"] == "sampler"
    assert {"best.pth", "checkpoint.pth", "epoch_001.pth", "result.json"} <= {p.name for p in out.iterdir()}

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "options come from the run" in resumed.output


def test_loss_balance_choice(demo_dataset: Manifest, tmp_path: Path) -> None:
    base = ["train", "--data", str(demo_dataset.root), "--epochs", "1", *FAST, "--json"]
    result = runner.invoke(
        app, [*base, "--out", str(tmp_path / "a"), "--balance", "loss", "--no-keep-epoch-checkpoints"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout.strip().splitlines()[-1])["config"]
    assert config["balance"] == "loss" and config["keep_epoch_checkpoints"] is False
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--balance", "sometimes"])
    assert refused.exit_code == 2 and "sampler" in refused.output and "loss" in refused.output


def test_training_options_come_from_train_config() -> None:
    """One home for each default and its help: every TrainConfig field is an option with its default."""
    options = {p.name: p for p in inspect.signature(train_command).parameters.values()}
    for name, field in TrainConfig.model_fields.items():
        if name == "augment":  # nested: --no-augment
            continue
        assert name in options, name
        default = options[name].default
        assert (default.value if isinstance(default, StrEnum) else default) == field.get_default(), name
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).stdout
    assert "--label-smoothing" in help_text and "<adam|adamw|sgd>" in help_text
    assert TrainConfig.model_fields["log_every"].description in help_text


def test_bad_options_exit_2_with_a_clear_message(demo_dataset: Manifest, tmp_path: Path) -> None:
    base = ["train", "--data", str(demo_dataset.root), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*base, "--model", "alexnet9"])
    assert result.exit_code == 2 and "--model" in result.output and "alexnet9" in result.output
    result = runner.invoke(app, [*base, "--optimizer", "lbfgs"])
    assert result.exit_code == 2 and "--optimizer" in result.output
    result = runner.invoke(app, [*base, "--weights", str(tmp_path / "nope.pth"), "--num-workers", "0"])
    assert result.exit_code == 2 and "nope.pth" in result.output
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no manifest" in result.output
