"""The ``dermasynth`` entry point: lazily loaded commands, --version, usage exit code, missing extras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermasynth import __version__
from dermasynth.cli import COMMANDS, app, load_command
from dermasynth.config import get_settings

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_every_listed_command_loads_under_its_name() -> None:
    for name, entry in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert (command.help or "").strip(), f"{name} has no help"
        if ":app" in entry.target:
            assert command.help == entry.help  # the entry is the one home of a group's help line


def test_help_lists_every_command_by_panel_and_version_prints() -> None:
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    for name, entry in COMMANDS.items():
        assert name in listed.stdout and entry.help in listed.stdout
    assert "Over HTTP" in listed.stdout and "Local" in listed.stdout
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"dermasynth {__version__}"


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2
    assert runner.invoke(app, ["jobs", "list", "--state", "sleeping"]).exit_code == 2
    assert runner.invoke(app, ["datasets", "upload", ".", "--name", "x", "--format", "tiff"]).exit_code == 2


def test_a_command_whose_extra_is_missing_says_which_to_install() -> None:
    """As in a client-only install: torch cannot be imported, so the local commands name the train extra."""
    code = (
        "import sys\nsys.modules['torch'] = None\nsys.modules['torchvision'] = None\n"
        "from dermasynth.cli import main\nmain(['train', '--help'])"
    )
    env = {"PYTHONPATH": f"{REPO / 'shared'}:{REPO}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert "needs the 'train' extra" in done.stderr and "pip install 'dermasynth[train]'" in done.stderr


def test_a_broken_service_setting_does_not_stop_an_http_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASYNTH_STORE", "tape")  # a worker's setting; the client does not use it
    monkeypatch.delenv("DERMASYNTH_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["jobs", "list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "ignoring the DERMASYNTH_* settings" in result.output and "no API key" in result.output
