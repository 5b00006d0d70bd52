from __future__ import annotations

import pytest
import redis
import urllib3.exceptions
from minio.error import S3Error, ServerError
from pydantic import ValidationError

from dermasynth.data.catalog import DatasetNotFound
from dermasynth.data.manifest import ManifestError
from dermasynth.jobs.params import TrainingParams
from services.worker.failures import describe, is_transient


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "resource", "request-id", "host-id")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError("refused"),
        TimeoutError("slow"),
        redis.ConnectionError("down"),
        urllib3.exceptions.MaxRetryError(None, "/x"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("reset"),
        ServerError("503", 503),
        _s3_error("SlowDown"),
        _s3_error("InternalError"),
    ],
)
def test_storage_and_network_failures_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


def _validation_error() -> ValidationError:
    try:
        TrainingParams.model_validate({"dataset_id": "x", "config": {"epochs": 0}})
    except ValidationError as exc:
        return exc
    raise AssertionError("epochs=0 was accepted")


@pytest.mark.parametrize(
    "exc",
    [
        _validation_error(),
        ValueError("bad option"),
        ManifestError("bad row"),
        DatasetNotFound("ds-x"),
        FileNotFoundError("gone"),
        _s3_error("NoSuchKey"),
        _s3_error("AccessDenied"),
        RuntimeError("bug"),
    ],
)
def test_everything_else_fails_at_once(exc: Exception) -> None:
    assert not is_transient(exc)


def test_describe_is_one_line_with_the_type() -> None:
    text = describe(_validation_error())
    assert text.startswith("ValidationError: ") and "\n" not in text and "epochs" in text
    assert describe(RuntimeError()) == "RuntimeError: RuntimeError()"
