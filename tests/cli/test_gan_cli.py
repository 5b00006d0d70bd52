from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dermasynth.cli import app
from dermasynth.data.manifest import Manifest

runner = CliRunner()
TINY = {
    "z_dim": 16,
    "w_dim": 32,
    "channel_base": 128,
    "max_channels": 16,
    "checkpoint_every": 2,
    "log_every": 1,
    "grid_size": 2,
}


def _said(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_train_sample_evaluate(demo_dataset: Manifest, tmp_path: Path) -> None:
    options = tmp_path / "tiny.json"
    options.write_text(json.dumps(TINY))
    gan, data = tmp_path / "gan", str(demo_dataset.root)
    common = ["--image-size", "16", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--options", str(options)]
    result = runner.invoke(app, ["gan", "train", "--data", data, "--out", str(gan), "--steps", "2", *common])
    assert result.exit_code == 0, result.output
    assert (gan / "generator.pth").is_file() and (gan / "grids" / "step-0000002" / "_all.png").is_file()

    result = runner.invoke(app, ["gan", "train", "--data", data, "--out", str(gan), "--steps", "3", *common])
    assert result.exit_code == 2 and "resume it" in result.output
    result = runner.invoke(
        app, ["gan", "train", "--data", data, "--out", str(gan), "--steps", "3", "--resume", *common]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((gan / "result.json").read_text())["step"] == 3

    out = tmp_path / "balanced"
    result = runner.invoke(
        app,
        [
            "gan",
            "sample",
            "--gan",
            str(gan),
            "--data",
            data,
            "--plan",
            "at_least",
            "--at-least",
            "15",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    made = Manifest.read(out)
    assert min(made.class_counts("train").values()) == 15
    assert {r.split for r in made.records if r.source == "synthetic"} == {"train"}

    result = runner.invoke(
        app,
        [
            "gan",
            "evaluate",
            "--gan",
            str(gan),
            "--data",
            data,
            "--json",
            "--feature-epochs",
            "1",
            "--samples-per-class",
            "6",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["classes"]) == set(demo_dataset.class_counts("train"))
    assert "resnet18" in report["feature_space"] and (gan / "gan_report.json").is_file()


def test_bad_input_gives_clear_errors(demo_dataset: Manifest, tmp_path: Path) -> None:
    result = runner.invoke(app, ["gan", "train", "--data", str(tmp_path), "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "no manifest" in _said(result.output)
    result = runner.invoke(
        app, ["gan", "train", "--data", str(demo_dataset.root), "--out", str(tmp_path / "g"), "--image-size", "48"]
    )
    assert result.exit_code == 2 and "image_size 48 is not supported" in _said(result.output)
    result = runner.invoke(
        app,
        [
            "gan",
            "sample",
            "--gan",
            str(tmp_path / "none"),
            "--data",
            str(demo_dataset.root),
            "--out",
            str(tmp_path / "o"),
            "--plan",
            "counts",
            "--counts",
            "df:3",
        ],
    )
    assert result.exit_code == 2 and "is not a list like df=200" in _said(result.output)
    result = runner.invoke(
        app,
        [
            "gan",
            "sample",
            "--gan",
            str(tmp_path / "none"),
            "--data",
            str(demo_dataset.root),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "no generator.pth" in _said(result.output)
