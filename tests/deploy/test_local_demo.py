"""The demo's job parameters are valid for their job kinds, and the script only uses commands that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dermasynth.cli import load_command
from dermasynth.jobs.params import SynthesisParams, TrainingParams

LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"


def test_demo_parameters_validate() -> None:
    synthesis = SynthesisParams.model_validate(
        {**json.loads((LOCAL / "synthesis.json").read_text()), "dataset_id": "ds-demo"}
    )
    assert synthesis.gan.image_size <= 32 and synthesis.gan.steps <= 100
    training = TrainingParams.model_validate(
        {**json.loads((LOCAL / "training.json").read_text()), "dataset_id": "syn-demo"}
    )
    assert training.config.epochs <= 3 and training.evaluate_split == "test"


def test_demo_calls_existing_cli_commands() -> None:
    script = (LOCAL / "demo.sh").read_text()
    calls = re.findall(r"dermasynth ([a-z-]+) ([a-z-]+)", script)
    assert {("keys", "create"), ("datasets", "upload"), ("jobs", "submit"), ("jobs", "status")} <= set(calls)
    assert {("models", "export"), ("models", "deploy")} <= set(calls)
    for group, command in calls:
        assert command in load_command(group).commands, f"dermasynth {group} {command}"  # type: ignore[attr-defined]
    assert "dermasynth predict " in script
