from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from dermasynth.cli import app
from dermasynth.config import get_settings
from tests.triton_fixtures import Served

runner = CliRunner()


@pytest.fixture
def serving_env(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DERMASYNTH_STORE", "filesystem")
    monkeypatch.setenv("DERMASYNTH_STORE_ROOT", str(served.store.root))
    monkeypatch.setenv("DERMASYNTH_TRITON_URL", served.triton.url)
    monkeypatch.setenv("DERMASYNTH_DEPLOY_SETTLE_S", "0.5")
    monkeypatch.setenv("COLUMNS", "300")  # rich tables are as wide as the terminal
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_export_list_deploy_and_rollback(served: Served, serving_env: None) -> None:
    run, data = served.run.store.root, served.run.manifest.root
    exported = runner.invoke(app, ["models", "export", "--run", str(run), "--data", str(data), "--name", "cli-model"])
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip().splitlines()[-1] == "1"

    listed = runner.invoke(app, ["models", "list", "cli-model"])
    assert listed.exit_code == 0 and "resnet18" in listed.stdout and str(run.name) in listed.stdout

    nothing = runner.invoke(app, ["models", "rollback", "cli-model"])
    assert nothing.exit_code == 1 and "no earlier live version" in nothing.output

    deployed = runner.invoke(app, ["models", "deploy", "cli-model", "1", "--queue-delay-us", "500"])
    assert deployed.exit_code == 0, deployed.output
    assert "version 1 is live" in deployed.output
    config = (served.store.root / "models" / "cli-model" / "config.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 500" in config

    missing = runner.invoke(app, ["models", "deploy", "cli-model", "7"])
    assert missing.exit_code == 1 and "no version 7" in missing.output


def test_export_names_a_bad_run(tmp_path: object, serving_env: None, served: Served) -> None:
    result = runner.invoke(
        app, ["models", "export", "--run", str(served.run.manifest.root), "--data", str(served.run.manifest.root)]
    )
    assert result.exit_code != 0 and "best.pth" in result.output
