"""Issue 12, finding 11: each service's object-store user is least-privilege; Triton's reads models/ only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "minio" / "policies"
WRITES = {"s3:PutObject", "s3:DeleteObject", "s3:*"}


def _statements(service: str) -> list[dict[str, object]]:
    return list(json.loads((POLICIES / f"{service}.json").read_text())["Statement"])


def test_triton_reads_models_only() -> None:
    for statement in _statements("triton"):
        actions = set(statement["Action"])  # type: ignore[arg-type]
        assert not actions & WRITES
        for resource in statement["Resource"]:  # type: ignore[attr-defined]
            assert resource in ("arn:aws:s3:::BUCKET/models/*", "arn:aws:s3:::BUCKET")


@pytest.mark.parametrize("service", ["gateway", "worker", "triton"])
def test_no_service_gets_the_whole_bucket_or_admin_rights(service: str) -> None:
    for statement in _statements(service):
        assert "s3:*" not in statement["Action"] and not any(
            a.startswith("admin:")
            for a in statement["Action"]  # type: ignore[attr-defined]
        )
        assert "arn:aws:s3:::BUCKET/*" not in statement["Resource"]  # type: ignore[operator]


def test_only_the_gateway_writes_retained_predictions_and_incoming_data() -> None:
    def written(service: str) -> set[str]:
        return {
            resource
            for statement in _statements(service)
            if set(statement["Action"]) & WRITES  # type: ignore[arg-type]
            for resource in statement["Resource"]  # type: ignore[attr-defined]
        }

    assert "arn:aws:s3:::BUCKET/predictions/*" in written("gateway")
    assert not {"arn:aws:s3:::BUCKET/predictions/*", "arn:aws:s3:::BUCKET/incoming/*"} & written("worker")
