"""The local tritonserver launcher: backend layout, environment, failures, and an S3 repository."""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from dermasynth.config import Settings
from dermasynth.serving.inference_client import TritonClient
from dermasynth.serving.model_repository import BatchingOptions
from dermasynth.serving.registry import ModelRegistry
from dermasynth.serving.schemas import ModelLineage
from dermasynth.storage import S3Store
from services.inference.__main__ import local_triton
from services.inference.launcher import (
    BACKEND_SOURCE,
    LocalTriton,
    TritonStartError,
    build_backend_dir,
    server_environment,
)
from tests.triton_fixtures import Served


def test_backend_dir_links_the_stub_and_holds_the_onnxruntime_backend(tmp_path: Path) -> None:
    backends = build_backend_dir(tmp_path / "backends")
    python = backends / "python"
    assert (python / "libtriton_python.so").is_file() and (python / "triton_python_backend_utils.py").is_file()
    stub = python / "triton_python_backend_stub"
    assert stub.is_symlink()
    assert stub.resolve().parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert (backends / "onnxruntime" / "model.py").read_text() == BACKEND_SOURCE.read_text()
    build_backend_dir(backends)  # building again over an existing folder is fine


def test_environment_leads_the_stub_to_this_interpreter() -> None:
    env = server_environment({"EXTRA": "1"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["EXTRA"] == "1"


def test_a_model_that_cannot_load_is_reported_at_once(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\nmax_batch_size: 1\n')
    triton = LocalTriton(str(repository), tmp_path / "work", models=["broken", "absent"])
    with pytest.raises(TritonStartError, match="could not load model 'broken'"):
        triton.start(timeout_s=120)
    assert triton.process is None
    empty = LocalTriton(str(tmp_path / "empty-repository"), tmp_path / "work2", models=["absent"])
    with pytest.raises(TritonStartError, match="no model 'absent' in the repository"):
        empty.start(timeout_s=120)


def test_serves_a_repository_kept_in_s3(served: Served, s3_endpoint: str, tmp_path: Path) -> None:
    """The layout the compose and Kubernetes Triton read: s3://host:port/bucket/models."""
    settings = Settings(
        store="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket="serving-test",
        s3_access_key="testing",
        s3_secret_key="testing",
        triton_url=f"127.0.0.1:{served.triton.http_port + 1}",
    )
    store = S3Store(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key.get_secret_value(),
        settings.s3_bucket,
        region=settings.s3_region,
    )
    registry = ModelRegistry(store)
    version = registry.register("classifier", served.exported, ModelLineage()).version
    registry.repository.write_config("classifier", [version], BatchingOptions())
    registry.record_live("classifier", version, "deploy", BatchingOptions())

    triton = local_triton(settings, tmp_path / "triton")
    triton.http_port = 0  # a free one
    assert triton.repository == f"s3://{s3_endpoint}/serving-test/models" and triton.models == ["classifier"]
    with triton:

        async def infer() -> np.ndarray:
            client = TritonClient(triton.url)
            try:
                return (await client.infer("classifier", version, np.zeros((2, 3, 32, 32), np.uint8))).logits
            finally:
                await client.close()

        logits = asyncio.run(infer())
    assert logits.shape == (2, len(served.exported.contract.classes))
