"""Weights from the owner's ``incoming/{owner}/`` prefix: checked by the gateway, fetched and loaded by the worker.

The gateway runs in-process (ASGI) and the training task through Celery's ``apply`` (the real task code,
without a broker), over one platform's Redis and filesystem store.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import torch
import torchvision.models
from fastapi.testclient import TestClient

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.classifier.checkpoint import epoch_key
from dermasynth.classifier.models import head_of
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobState, run_prefix
from dermasynth.storage import PrefixedStore
from dermasynth.storage.state_dicts import load_state
from services.gateway.app import create_app
from services.gateway.services import Services
from services.worker.resources import WorkerResources
from services.worker.tasks.training import training
from tests.services.platform import PEPPER, Platform

OWN = "incoming/team-a/weights/mobilenet.pth"
TINY = {"model": "mobilenet_v3_small", "image_size": 16, "batch_size": 16, "num_workers": 0}


@pytest.fixture
def gateway(platform: Platform, resources: WorkerResources) -> Iterator[TestClient]:
    services = Services.from_settings(platform.settings)
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            yield client
    finally:
        services.close()


def _key(platform: Platform, owner: str) -> dict[str, str]:
    keys = RedisApiKeyStore(redis.Redis.from_url(platform.redis_url), PEPPER, platform.prefix)
    return {"X-API-Key": keys.create(owner, [Scope.ENGINEER], owner=owner).token}


def _training(dataset_id: str, weights: str, **config: Any) -> dict[str, Any]:
    return {
        "kind": "training",
        "params": {"dataset_id": dataset_id, "evaluate_split": None, "config": {**TINY, "weights": weights, **config}},
    }


def test_own_weights_are_loaded_and_other_owners_missing_or_escaping_ones_are_refused(
    platform: Platform, resources: WorkerResources, gateway: TestClient, demo_dataset: Manifest
) -> None:
    torch.manual_seed(5)
    source = torchvision.models.mobilenet_v3_small(weights=None)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    resources.store.put_bytes(OWN, buffer.getvalue())
    resources.store.put_bytes("incoming/team-b/weights/mobilenet.pth", buffer.getvalue())
    dataset = resources.registry.publish(demo_dataset.root, name="demo", origin="local", owner="team-a")
    team_a = _key(platform, "team-a")

    refused = {
        "incoming/team-b/weights/mobilenet.pth": "outside your own incoming/team-a/ prefix",
        "incoming/team-a/weights/missing.pth": "no object under 'incoming/team-a/weights/missing.pth'",
        "incoming/team-a/../team-b/weights/mobilenet.pth": "'..' is not accepted",
    }
    for key, said in refused.items():
        response = gateway.post("/v1/jobs", headers=team_a, json=_training(dataset.id, f"store:{key}"))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"].replace("{owner}", "team-a")  # form errors come before the owner is known
        assert said in detail and "accepted: store:incoming/team-a/<path>.pth" in detail

    # the backbone frozen for the first epoch: that epoch's model holds the uploaded weights exactly
    submitted = gateway.post(
        "/v1/jobs",
        headers=team_a,
        json=_training(dataset.id, f"store:{OWN}", epochs=2, freeze_epochs=1, max_steps_per_epoch=1),
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["params"]["config"]["weights"] == f"store:{OWN}"
    training.apply(args=(job["id"],))
    record = resources.jobs.get(job["id"])
    assert record.state == JobState.SUCCEEDED, record.error
    assert any(f"fetching weights store:{OWN}" in line for line in resources.jobs.logs(job["id"]).lines)
    first = load_state(PrefixedStore(resources.store, run_prefix(job["id"])), epoch_key(1), map_location="cpu")
    assert first["config"]["weights"] == f"store:{OWN}"  # the run names the store file, not the worker's copy
    head_name, _ = head_of(source)
    uploaded = dict(source.named_parameters())
    checked = 0
    for name, tensor in first["model"].items():
        if name in uploaded and not name.startswith(head_name + "."):
            assert torch.equal(tensor, uploaded[name].detach()), name
            checked += 1
    assert checked == len(uploaded) - 2  # every parameter but the new head's weight and bias

    # a state_dict of another architecture fails the job, saying so
    mismatched = gateway.post("/v1/jobs", headers=team_a, json=_training(dataset.id, f"store:{OWN}", model="resnet18"))
    assert mismatched.status_code == 202, mismatched.text
    training.apply(args=(mismatched.json()["id"],))
    failed = resources.jobs.get(mismatched.json()["id"])
    assert failed.state == JobState.FAILED and failed.error is not None
    assert "is not a resnet18 state_dict" in failed.error or "does not fit resnet18" in failed.error, failed.error
