"""End to end over real HTTP: a uvicorn gateway, a Celery worker process, Redis, the filesystem store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dermasynth.auth import Scope
from dermasynth.data.manifest import Manifest
from tests.data.zips import zip_folder
from tests.services.platform import Platform, wait_until

pytestmark = pytest.mark.integration

TINY = {"model": "mobilenet_v3_small", "image_size": 16, "batch_size": 16, "num_workers": 0}
FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def api(shared_platform: Platform) -> Iterator[httpx.Client]:
    shared_platform.start_worker("e2e")
    url = shared_platform.start_gateway()
    headers = {"Authorization": f"Bearer {shared_platform.key(Scope.ENGINEER)}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def uploaded(api: httpx.Client, demo_dataset: Manifest) -> str:
    response = api.post(
        "/v1/datasets",
        data={"name": "generated demo"},
        files={"file": ("demo.zip", zip_folder(demo_dataset.root), "application/zip")},
    )
    assert response.status_code == 202, response.text  # an ingest job imports it
    job = _wait(api, response.json()["id"])
    assert job["state"] == "succeeded", job
    return str(job["result"]["dataset_id"])


def _wait(api: httpx.Client, job_id: str, condition: str = "final", timeout: float = 300) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(api.get(f"/v1/jobs/{job_id}").json())
        if condition == "final":
            return seen["state"] in FINAL
        progress = seen.get("progress") or {}
        return seen["state"] in FINAL or (progress.get("epoch") or 0) >= 2

    wait_until(reached, timeout, f"job {job_id} to reach {condition}", interval=0.5)
    return seen


def test_train_then_evaluate_through_the_api(api: httpx.Client, uploaded: str) -> None:
    response = api.post(
        "/v1/jobs", json={"kind": "training", "params": {"dataset_id": uploaded, "config": {**TINY, "epochs": 2}}}
    )
    assert response.status_code == 202, response.text
    job = _wait(api, response.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 1 and job["error"] is None
    assert job["result"]["epochs_run"] == 2 and job["result"]["metrics"]["split"] == "test"
    assert 0 <= job["result"]["metrics"]["balanced_accuracy"] <= 1
    files = {a["path"] for a in api.get(f"/v1/jobs/{job['id']}/artefacts").json()}
    assert {
        "checkpoint.pth",
        "best.pth",
        "result.json",
        "epoch_001.pth",
        "epoch_002.pth",
        "eval/test/metrics.json",
        "eval/test/confusion_matrix.png",
        "_COMPLETE.json",
    } <= files
    metrics = api.get(f"/v1/jobs/{job['id']}/artefacts/eval/test/metrics.json")
    assert metrics.headers["content-type"] == "application/json"
    assert json.loads(metrics.content)["n"] == job["result"]["metrics"]["n"]
    logs = api.get(f"/v1/jobs/{job['id']}/logs").json()["lines"]
    assert any("attempt 1" in line for line in logs) and any("epoch 2/2" in line for line in logs)

    response = api.post(
        "/v1/jobs", json={"kind": "evaluation", "params": {"training_job_id": job["id"], "bootstrap": 50}}
    )
    assert response.status_code == 202, response.text
    evaluation = _wait(api, response.json()["id"])
    assert evaluation["state"] == "succeeded", evaluation
    assert evaluation["queue"] == "default" and evaluation["result"]["dataset_id"] == uploaded
    assert evaluation["result"]["metrics"]["balanced_accuracy"] == job["result"]["metrics"]["balanced_accuracy"]
    files = {a["path"] for a in api.get(f"/v1/jobs/{evaluation['id']}/artefacts").json()}
    assert {"best.pth", "eval/test/metrics.json", "_COMPLETE.json"} <= files


def test_cancel_a_running_job_keeps_its_last_checkpoint(api: httpx.Client, uploaded: str) -> None:
    response = api.post(
        "/v1/jobs", json={"kind": "training", "params": {"dataset_id": uploaded, "config": {**TINY, "epochs": 40}}}
    )
    job_id = response.json()["id"]
    running = _wait(api, job_id, "second epoch")
    assert running["state"] == "running", running
    cancel = api.post(f"/v1/jobs/{job_id}/cancel")
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"]
    job = _wait(api, job_id, timeout=120)
    assert job["state"] == "cancelled" and job["error"] is None
    files = {a["path"] for a in api.get(f"/v1/jobs/{job_id}/artefacts").json()}
    assert {"checkpoint.pth", "epoch_001.pth"} <= files and "_COMPLETE.json" not in files
    assert not any(name.startswith("epoch_04") for name in files)
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
