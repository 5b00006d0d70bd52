from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dermasynth.cli import app
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


def test_no_sampler_and_loss_balance_choices(demo_dataset: Manifest, tmp_path: Path) -> None:
    base = ["train", "--data", str(demo_dataset.root), "--epochs", "1", *FAST, "--json"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--no-sampler", "--balance", "loss"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["config"]["balance"] == "loss"
    contradiction = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--no-sampler", "--balance", "sampler"])
    assert contradiction.exit_code == 2 and "contradicts" in contradiction.output


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
