"""Records from before owners existed: find them and give them an owner (``dermasynth admin assign-owner``).

Jobs, datasets and model versions written before issue 12 carry no owner (a legacy job carries the
submitting key's id in its place), so only admin keys reach them. Assigning an owner goes through the
same stores and indexes the gateway uses, so the owner's lists page through them afterwards.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from dermasynth.auth.keys import check_owner
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs.store import RedisJobStore
from dermasynth.serving.registry import ModelRegistry


class OwnerlessRecords(BaseModel):
    """The records without an owner (that were given one, unless it was a dry run)."""

    jobs: list[str] = Field(default_factory=list, description="job ids")
    datasets: list[str] = Field(default_factory=list, description="dataset ids")
    model_versions: list[str] = Field(default_factory=list, description="'name:version'")

    @property
    def count(self) -> int:
        return len(self.jobs) + len(self.datasets) + len(self.model_versions)


def find_ownerless(jobs: RedisJobStore, catalog: DatasetCatalog, registry: ModelRegistry) -> OwnerlessRecords:
    """Every job, dataset and model version stored without an owner (reads every record)."""
    return OwnerlessRecords(
        jobs=jobs.ownerless(),
        datasets=catalog.ownerless(),
        model_versions=[f"{name}:{version}" for name, version in registry.ownerless()],
    )


def assign_owner(
    owner: str, jobs: RedisJobStore, catalog: DatasetCatalog, registry: ModelRegistry, *, dry_run: bool = False
) -> OwnerlessRecords:
    """Give every ownerless record to ``owner`` (``dry_run``: only say which they are).

    Raises:
        ValueError: a malformed owner (nothing is changed).
    """
    check_owner(owner)
    found = find_ownerless(jobs, catalog, registry)
    if not dry_run:
        for job_id in found.jobs:
            jobs.assign_owner(job_id, owner)
        for dataset_id in found.datasets:
            catalog.assign_owner(dataset_id, owner)
        for model_version in found.model_versions:
            name, version = model_version.rsplit(":", 1)
            registry.assign_owner(name, int(version), owner)
    return found
