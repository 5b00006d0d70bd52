"""``dermasynth admin assign-owner`` on records written before owners existed (real Redis, filesystem store)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from dermasynth.cli import app
from dermasynth.config import get_settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.manifest import Manifest
from dermasynth.jobs import JobKind, JobRecord, JobState
from dermasynth.jobs.store import RedisJobStore
from dermasynth.serving.registry import ModelRegistry
from dermasynth.serving.schemas import ModelLineage, ModelVersionInfo
from dermasynth.storage import FilesystemStore

runner = CliRunner()


def _legacy_job(client: redis.Redis, prefix: str, **stored: object) -> str:
    """A job record as written before owners existed: in the global index only, without ``owner``/``key_id``."""
    record = JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={"dataset_id": "ds-old"})
    raw = {k: v for k, v in record.model_dump(mode="json").items() if k not in ("owner", "key_id", "progress")}
    client.set(f"{prefix}:job:{record.id}", json.dumps({**raw, **stored}))
    client.zadd(f"{prefix}:jobs", {record.id: record.created_at.timestamp()})
    return record.id


def test_assign_owner_gives_every_ownerless_record_to_the_team_and_lists_find_them(
    redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_dataset: Manifest
) -> None:
    for name, value in {
        "DERMASYNTH_REDIS_URL": redis_url,
        "DERMASYNTH_JOB_KEY_PREFIX": redis_prefix,
        "DERMASYNTH_STORE": "filesystem",
        "DERMASYNTH_STORE_ROOT": str(tmp_path / "store"),
        "DERMASYNTH_CACHE_ROOT": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_url)
    jobs = RedisJobStore(client, redis_prefix)
    store = FilesystemStore(tmp_path / "store")
    catalog, registry = DatasetCatalog(store, tmp_path / "cache"), ModelRegistry(store)

    no_owner = _legacy_job(client, redis_prefix)
    key_as_owner = _legacy_job(client, redis_prefix, owner="0123456789ab", state="succeeded")
    owned = jobs.create(
        JobRecord(id=uuid.uuid4().hex, kind=JobKind.TRAINING, queue="train", params={}, owner="team-x")
    ).id
    old = catalog.publish(demo_dataset.root, name="old", origin="local")
    entry = json.loads(store.get_bytes(f"catalog/datasets/{old.id}.json"))
    del entry["owner"]
    store.put_bytes(f"catalog/datasets/{old.id}.json", json.dumps(entry).encode())
    store.delete(f"catalog/owners/default/{old.id}")
    version = ModelVersionInfo(
        name="classifier",
        version=1,
        created_at=old.created_at,
        architecture="resnet18",
        classes=["mel", "nv"],
        image_size=64,
        min_probability=0.0,
        ood_threshold=1.0,
        lineage=ModelLineage(dataset=old.id),
    ).model_dump(mode="json", exclude={"owner", "live"})
    store.put_bytes("registry/classifier/versions/1.json", json.dumps(version).encode())

    dry = runner.invoke(app, ["admin", "assign-owner", "--owner", "derm-lab", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    found = json.loads(dry.stdout)
    assert sorted(found["jobs"]) == sorted([no_owner, key_as_owner]) and owned not in found["jobs"]
    assert found["datasets"] == [old.id] and found["model_versions"] == ["classifier:1"]
    assert jobs.list(owner="derm-lab").jobs == [] and catalog.list("derm-lab") == []  # a dry run changes nothing

    done = runner.invoke(app, ["admin", "assign-owner", "--owner", "derm-lab"])
    assert done.exit_code == 0, done.output
    assert "gave 2 jobs, 1 datasets and 1 model versions to owner 'derm-lab'" in done.output
    listed = jobs.list(owner="derm-lab")  # through the owner's index, as the gateway lists
    assert sorted(j.id for j in listed.jobs) == sorted([no_owner, key_as_owner]) and listed.total == 2
    assert jobs.get(key_as_owner).key_id == "0123456789ab"  # the legacy owner was the submitting key
    assert jobs.active_jobs("derm-lab") == 1 and jobs.get(no_owner).state == JobState.QUEUED
    assert jobs.get(owned).owner == "team-x"
    assert [d.id for d in catalog.list("derm-lab")] == [old.id]
    assert registry.version("classifier", 1).owner == "derm-lab"

    again = runner.invoke(app, ["admin", "assign-owner", "--owner", "other-team", "--json"])
    assert json.loads(again.stdout) == {"jobs": [], "datasets": [], "model_versions": []}
    bad = runner.invoke(app, ["admin", "assign-owner", "--owner", "Not A Team"])
    assert bad.exit_code == 1 and "is not valid" in bad.output
    get_settings.cache_clear()
