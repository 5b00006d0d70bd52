from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.cli import app
from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run")
    fit(
        TrainConfig(
            model="mobilenet_v3_small", image_size=16, epochs=1, batch_size=8, num_workers=0, max_steps_per_epoch=2
        ),
        demo_dataset,
        FilesystemStore(path),
    )
    return path


def test_evaluate_json_prints_one_object(run_dir: Path, demo_dataset: Manifest) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            str(run_dir),
            "--data",
            str(demo_dataset.root),
            "--split",
            "test",
            "--json",
            "--bootstrap",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"} <= report.keys()
    assert set(report["per_class"]) == set(demo_dataset.classes)
    assert {"precision", "recall", "f1", "support"} <= report["per_class"]["nv"].keys()
    assert sum(map(sum, report["confusion_matrix"])) == len(demo_dataset.in_split("test"))
    assert (run_dir / "metrics.json").is_file() and (run_dir / "confusion_matrix.png").is_file()


def test_evaluate_table_and_errors(run_dir: Path, demo_dataset: Manifest, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            str(run_dir),
            "--data",
            str(demo_dataset.root),
            "--split",
            "val",
            "--bootstrap",
            "0",
            "--prefix",
            "eval/val",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "balanced_accuracy" in result.output and (run_dir / "eval" / "val" / "per_class.png").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["evaluate", "--run", str(empty), "--data", str(demo_dataset.root)])
    assert result.exit_code == 2 and "no best checkpoint" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["evaluate", "--run", str(run_dir), "--data", str(demo_dataset.root), "--split", "holdout"]
    )
    assert result.exit_code == 2 and "holdout" in result.output
