"""The demo's job parameters are valid for their job kinds, and the script only uses commands that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.main import get_command

from dermasynth.cli import app
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
    root = get_command(app)
    calls = re.findall(r"dermasynth ([a-z-]+) ([a-z-]+)", script)
    assert {("keys", "create"), ("datasets", "upload"), ("jobs", "submit"), ("jobs", "status")} <= set(calls)
    context = root.make_context("dermasynth", [], resilient_parsing=True)
    for group, command in calls:
        # the CLI's groups load lazily (issue 17): ask the group, as the command line does
        subgroup = root.get_command(context, group)  # type: ignore[attr-defined]
        assert subgroup is not None, f"dermasynth {group}"
        assert command in subgroup.commands, f"dermasynth {group} {command}"
