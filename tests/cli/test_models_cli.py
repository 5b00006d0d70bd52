"""``dermasynth models ...`` and ``dermasynth predict`` through a real gateway, worker and tritonserver."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermasynth.auth import Scope
from dermasynth.cli import app
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs import JobKind, JobRecord, JobState, RedisJobStore, run_prefix
from tests.services.gateway.serving import ServingPlatform, serving_platform
from tests.triton_fixtures import Served

runner = CliRunner()


@pytest.fixture(scope="module")
def platform(served: Served, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingPlatform]:
    with serving_platform(served, redis_url, tmp_path_factory.mktemp("models-cli")) as deployment:
        deployment.start_gateway()
        deployment.start_worker("models-cli", queues="default")  # exports run as worker jobs
        yield deployment


def _env(platform: ServingPlatform, *scopes: Scope) -> dict[str, str]:
    key = platform.key(*scopes)
    return {"DERMASYNTH_GATEWAY_URL": platform.gateway_url, "DERMASYNTH_API_KEY": key, "COLUMNS": "300"}


def _succeeded_training_job(served: Served, platform: ServingPlatform, tmp_path: Path) -> str:
    """A training job as a worker leaves it: succeeded, its run under runs/{id}/ in the store."""
    settings = platform.settings
    dataset = DatasetCatalog(served.store, tmp_path / "cache").push(served.run.manifest.root, name="demo")
    jobs = RedisJobStore.from_url(settings.redis_url, settings.job_key_prefix)
    job = jobs.create(
        JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={"dataset_id": dataset.id})
    )
    for key in served.run.store.list():
        served.store.put_bytes(f"{run_prefix(job.id)}/{key}", served.run.store.get_bytes(key))
    jobs.transition(job.id, JobState.RUNNING)
    jobs.transition(job.id, JobState.SUCCEEDED)
    return job.id


@pytest.mark.integration
def test_export_list_show_deploy_and_rollback_over_http(
    served: Served, platform: ServingPlatform, tmp_path: Path
) -> None:
    env = _env(platform, Scope.ENGINEER, Scope.DEPLOYER)
    name = f"cli-{uuid.uuid4().hex[:6]}"
    job_id = _succeeded_training_job(served, platform, tmp_path)
    exported = runner.invoke(app, ["models", "export", job_id, "--name", name], env=env)  # 202: follows the job
    assert exported.exit_code == 0, exported.output
    assert "export queued as job" in exported.output and "succeeded" in exported.output
    assert exported.stdout.strip().splitlines()[-1] == "1"

    listed = runner.invoke(app, ["models", "list", name], env=env)
    assert listed.exit_code == 0 and "resnet18" in listed.stdout and job_id in listed.stdout
    versions = json.loads(runner.invoke(app, ["models", "list", name, "--json"], env=env).stdout)
    assert [(v["version"], v["lineage"]["job_id"], v["live"]) for v in versions] == [(1, job_id, False)]
    shown = runner.invoke(app, ["models", "show", name, "1"], env=env)
    assert shown.exit_code == 0 and "abstains above OOD score" in shown.stdout and "90% prediction sets" in shown.stdout

    nothing = runner.invoke(app, ["models", "rollback", name], env=env)
    assert nothing.exit_code == 1 and "no earlier live version" in nothing.output

    deployed = runner.invoke(app, ["models", "deploy", name, "1", "--queue-delay-us", "500"], env=env)
    assert deployed.exit_code == 0, deployed.output
    assert "version 1 is live" in deployed.output
    config = (served.store.root / "models" / name / "config.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 500" in config
    assert "max_batch_size: 32" in config  # the options not given keep their values
    detail = json.loads(runner.invoke(app, ["models", "show", name, "--json"], env=env).stdout)
    assert detail["live"]["version"] == 1 and detail["live"]["history"][0]["action"] == "deploy"

    missing = runner.invoke(app, ["models", "deploy", name, "7"], env=env)
    assert missing.exit_code == 1 and "404 not_found" in missing.output
    bad = runner.invoke(app, ["models", "deploy", name, "1", "--instance-kind", "tpu"], env=env)
    assert bad.exit_code == 2 and "cpu" in bad.output and "gpu" in bad.output


@pytest.mark.integration
def test_export_refuses_a_job_that_did_not_succeed(platform: ServingPlatform) -> None:
    env = _env(platform, Scope.ENGINEER)
    result = runner.invoke(app, ["models", "export", uuid.uuid4().hex], env=env)
    assert result.exit_code == 1 and "404" in result.output


@pytest.mark.integration
def test_predict_files_as_a_clinician(served: Served, platform: ServingPlatform, tmp_path: Path) -> None:
    record = served.run.manifest.in_split("test")[0]
    lesion = tmp_path / "lesion.png"
    lesion.write_bytes(served.run.manifest.path_of(record).read_bytes())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"hello")
    env = _env(platform, Scope.CLINICIAN)

    answered = runner.invoke(
        app, ["predict", str(lesion), "--top-k", "2", "--explain", str(tmp_path / "maps")], env=env
    )
    assert answered.exit_code == 0, answered.output
    assert "1 of 1 answered" in answered.stdout and "not a diagnosis" in answered.output
    assert (tmp_path / "maps" / "lesion.gradcam.png").read_bytes()[:4] == b"\x89PNG"

    mixed = runner.invoke(app, ["predict", str(lesion), str(broken), "--json", "--batch-size", "1"], env=env)
    assert mixed.exit_code == 1  # one image could not be used
    responses = json.loads(mixed.stdout)
    assert [r["succeeded"] for r in responses] == [1, 0]
    assert responses[1]["results"][0]["reason"] == "not_an_image"
    assert len(responses[0]["results"][0]["top_k"]) == 3

    engineer = runner.invoke(app, ["predict", str(lesion)], env=_env(platform, Scope.ENGINEER))
    assert engineer.exit_code == 1 and "403" in engineer.output and "clinician" in engineer.output
