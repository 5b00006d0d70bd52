from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dermasynth.cli import app

runner = CliRunner()


def test_make_demo_then_stats_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["data", "make-demo", str(out), "--size", "32", "--count", "70", "--seed", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "stats", str(out), "--json", "--plot", str(tmp_path / "dist.png")])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["images"] == 70 and sum(stats["classes"].values()) == 70
    assert set(stats["splits"]) == {"train", "val", "test"}
    assert stats["sources"] == {"generated": 70}
    assert 0 < stats["lesions"] <= 70
    assert (tmp_path / "dist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_then_stats(tmp_path: Path) -> None:
    runner.invoke(app, ["data", "make-demo", str(tmp_path / "demo"), "--size", "16", "--count", "56"])
    result = runner.invoke(
        app, ["data", "import", str(tmp_path / "demo"), "--out", str(tmp_path / "ds"), "--resplit", "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ds" / "import_report.json").read_text())
    assert report["files_seen"] == report["accepted"] == 56
    assert report["split_seed"] == 4


def test_errors_are_clear_and_exit_nonzero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(tmp_path)])
    assert result.exit_code == 2 and "no manifest" in result.output
    result = runner.invoke(app, ["data", "import", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "coco"])
    assert result.exit_code != 0 and "coco" in result.output
    result = runner.invoke(app, ["data", "make-demo", str(tmp_path / "x"), "--val-frac", "0.5", "--test-frac", "0.5"])
    assert result.exit_code != 0
