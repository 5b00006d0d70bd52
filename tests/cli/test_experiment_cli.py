from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from typer.testing import CliRunner

from dermasynth.cli import app
from dermasynth.data.manifest import Manifest

runner = CliRunner()
TRAIN = {
    "image_size": 32,
    "epochs": 1,
    "batch_size": 8,
    "max_steps_per_epoch": 2,
    "num_workers": 0,
    "device": "cpu",
    "keep_epoch_checkpoints": False,
}


def _config(tmp_path: Path, **options: object) -> Path:
    path = tmp_path / "experiment.yaml"
    base: dict[str, object] = {
        "name": "cli",
        "arms": ["real", "sampler"],
        "backbones": ["mobilenet_v3_small"],
        "seeds": [0],
        "train": TRAIN,
        "evaluation": {"bootstrap": 100},
    }
    path.write_text(yaml.safe_dump({**base, **options}))
    return path


def test_experiment_runs_then_refuses_to_overwrite_then_resumes(demo_dataset: Manifest, tmp_path: Path) -> None:
    data = os.path.relpath(demo_dataset.root, tmp_path)  # read from the config file's folder
    config = _config(tmp_path, data={"dataset": str(data)})
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", "--config", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["arm"] for r in summary["runs"]] == ["real", "sampler"]
    assert "[mobilenet_v3_small] balanced accuracy: sampler" in result.output
    assert (out / "report" / "report.md").is_file() and (out / "result.json").is_file()

    again = runner.invoke(app, ["experiment", "--config", str(config), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["experiment", "--config", str(config), "--out", str(out), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == summary


def test_bad_configs_exit_2_with_a_clear_message(demo_dataset: Manifest, tmp_path: Path) -> None:
    out = str(tmp_path / "exp")
    data = ["--data", str(demo_dataset.root)]
    unknown_arm = runner.invoke(
        app, ["experiment", "--config", str(_config(tmp_path, arms=["real", "gan2"])), "--out", out, *data]
    )
    assert unknown_arm.exit_code == 2 and "arm 'gan2' is not a standard arm" in unknown_arm.output
    per_run = runner.invoke(
        app, ["experiment", "--config", str(_config(tmp_path, train={**TRAIN, "seed": 3})), "--out", out, *data]
    )
    assert per_run.exit_code == 2 and "train must not set ['seed']" in per_run.output
    no_data = runner.invoke(app, ["experiment", "--config", str(_config(tmp_path)), "--out", out])
    assert no_data.exit_code == 2 and "--data" in no_data.output
    (tmp_path / "list.yaml").write_text("- real\n- sampler\n")
    not_mapping = runner.invoke(app, ["experiment", "--config", str(tmp_path / "list.yaml"), "--out", out, *data])
    assert not_mapping.exit_code == 2 and "must hold a mapping" in not_mapping.output
    missing = runner.invoke(app, ["experiment", "--config", str(tmp_path / "none.yaml"), "--out", out, *data])
    assert missing.exit_code == 2 and "none.yaml" in missing.output
