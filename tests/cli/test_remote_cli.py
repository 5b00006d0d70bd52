"""``dermasynth datasets ...`` and ``dermasynth jobs ...`` against a real gateway over HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dermasynth.auth import Scope
from dermasynth.cli import app
from dermasynth.cli.jobs import parse_params
from dermasynth.config import get_settings
from dermasynth.data.manifest import Manifest
from dermasynth.gateway_client import GatewayClient
from tests.services.platform import Platform

runner = CliRunner()


def test_parse_params() -> None:
    assert parse_params('{"dataset_id": "a"}', ["config.epochs=3", "config.model=resnet18", "tta=true"]) == {
        "dataset_id": "a",
        "config": {"epochs": 3, "model": "resnet18"},
        "tta": True,
    }
    for bad, sets in (("[1]", []), ("{nope", []), (None, ["noequals"]), ('{"a": 1}', ["a.b=2"]), ("@/nowhere", [])):
        with pytest.raises(typer.BadParameter):
            parse_params(bad, sets)


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(redis_url, tmp_path_factory.mktemp("cli-platform"))
    try:
        platform.start_gateway()
        platform.start_worker("cli", queues="default")  # uploads are ingest jobs; training jobs stay queued
        yield platform
    finally:
        platform.close()


@pytest.fixture
def env(live: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DERMASYNTH_GATEWAY_URL", live.gateway_url)
    monkeypatch.setenv("DERMASYNTH_API_KEY", live.key(Scope.ENGINEER))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.integration
def test_upload_submit_status_cancel_logs(env: None, demo_dataset: Manifest) -> None:
    result = runner.invoke(app, ["datasets", "upload", str(demo_dataset.root), "--name", "demo"])
    assert result.exit_code == 0, result.output
    dataset_id = result.stdout.strip().splitlines()[-1]
    assert dataset_id.startswith("ds-")
    assert dataset_id in runner.invoke(app, ["datasets", "list"]).stdout
    shown = json.loads(runner.invoke(app, ["datasets", "show", dataset_id, "--json"]).stdout)
    assert [d["id"] for d in json.loads(runner.invoke(app, ["datasets", "list", "--json"]).stdout)] == [dataset_id]
    human = runner.invoke(app, ["datasets", "show", dataset_id]).stdout
    assert f"{len(demo_dataset)} images" in human and "test" in human
    assert shown["stats"]["images"] == len(demo_dataset)

    result = runner.invoke(
        app,
        [
            "jobs",
            "submit",
            "training",
            "--set",
            f"dataset_id={dataset_id}",
            "--set",
            "config.epochs=1",
            "--set",
            "config.model=mobilenet_v3_small",
        ],
    )
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[-1]
    status = json.loads(runner.invoke(app, ["jobs", "status", job_id, "--json"]).stdout)
    assert status["state"] == "queued" and status["params"]["config"]["epochs"] == 1
    assert job_id in runner.invoke(app, ["jobs", "list", "--state", "queued"]).stdout
    listed = json.loads(runner.invoke(app, ["jobs", "list", "--json"]).stdout)
    assert [(j["kind"], j["state"]) for j in listed["jobs"]] == [("training", "queued"), ("ingest", "succeeded")]
    assert listed["total"] == 2 and listed["jobs"][0]["id"] == job_id
    assert "queued" in runner.invoke(app, ["jobs", "status", job_id]).stdout
    assert runner.invoke(app, ["jobs", "cancel", job_id]).exit_code == 0
    assert json.loads(runner.invoke(app, ["jobs", "status", job_id, "--json"]).stdout)["state"] == "cancelled"
    watched = runner.invoke(app, ["jobs", "status", job_id, "--watch"])
    assert watched.exit_code == 1 and "cancelled" in watched.output  # a job that did not succeed exits 1
    assert runner.invoke(app, ["jobs", "logs", job_id]).stdout == ""
    assert runner.invoke(app, ["jobs", "artefacts", job_id]).stdout == ""


@pytest.mark.integration
def test_submit_wait_exits_1_when_the_job_does_not_succeed(env: None, live: Platform, demo_dataset: Manifest) -> None:
    dataset_id = runner.invoke(app, ["datasets", "upload", str(demo_dataset.root), "--name", "w"]).stdout.split()[-1]
    stop = threading.Event()

    def cancel_once_queued() -> None:  # no worker runs here: the job stays queued until cancelled
        with GatewayClient(live.gateway_url, live.key(Scope.ENGINEER)) as client:
            while not stop.is_set():
                for job in client.jobs(state="queued").jobs:
                    client.cancel(job.id)
                    return
                time.sleep(0.2)

    canceller = threading.Thread(target=cancel_once_queued)
    canceller.start()
    try:
        result = runner.invoke(app, ["jobs", "submit", "training", "--set", f"dataset_id={dataset_id}", "--wait"])
    finally:
        stop.set()
        canceller.join()
    assert result.exit_code == 1 and "cancelled" in result.output


@pytest.mark.integration
def test_refusals_are_reported_with_the_gateway_s_reason(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, ["jobs", "submit", "training", "--set", "dataset_id=ds-000000000000"])
    assert result.exit_code == 1 and "422 unknown_reference" in result.output
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    result = runner.invoke(app, ["datasets", "upload", str(tmp_path / "x.zip"), "--name", "x"])
    assert result.exit_code == 1 and "not_a_zip" in result.output
    monkeypatch.setenv("DERMASYNTH_API_KEY", "dsk_000000000000_" + "a" * 43)
    get_settings.cache_clear()
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 1 and "401" in result.output
    monkeypatch.delenv("DERMASYNTH_API_KEY")
    get_settings.cache_clear()
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 2 and "no API key" in result.output


@pytest.mark.integration
def test_upload_no_wait_prints_the_job_and_register_refuses_another_owners_prefix(
    env: None, demo_dataset: Manifest
) -> None:
    result = runner.invoke(app, ["datasets", "upload", str(demo_dataset.root), "--name", "later", "--no-wait"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[-1]
    assert len(job_id) == 32 and f"ingest queued as job {job_id}" in result.output
    watched = runner.invoke(app, ["jobs", "status", job_id, "--watch"])
    assert watched.exit_code == 0 and "succeeded" in watched.output
    status = json.loads(runner.invoke(app, ["jobs", "status", job_id, "--json"]).stdout)
    assert status["kind"] == "ingest" and status["result"]["dataset_id"] == f"ds-{job_id}"
    refused = runner.invoke(app, ["datasets", "register", "incoming/someone-else/data", "--name", "x"])
    assert refused.exit_code == 1 and "403 forbidden_prefix" in refused.output
