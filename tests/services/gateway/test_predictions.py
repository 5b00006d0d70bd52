"""POST /v1/predictions through the gateway, against the session's real tritonserver."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from dermasynth.auth import Scope
from dermasynth.data.images import load_rgb
from dermasynth.serving.calibration import calibrated_probabilities
from dermasynth.serving.inference_client import TritonClient
from services.inference.launcher import LocalTriton, free_port
from tests.services.gateway.serving import ServingPlatform, serving_platform
from tests.triton_fixtures import Served

Files = list[tuple[str, tuple[str, bytes, str]]]


@pytest.fixture(scope="module")
def platform(served: Served, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingPlatform]:
    with serving_platform(served, redis_url, tmp_path_factory.mktemp("gw")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def client(platform: ServingPlatform) -> Iterator[TestClient]:
    with platform.in_process() as test_client:
        yield test_client


@pytest.fixture(scope="module")
def clinician(platform: ServingPlatform) -> dict[str, str]:
    return platform.headers(Scope.CLINICIAN)


@pytest.fixture(scope="module")
def gateway(platform: ServingPlatform) -> str:
    """A real uvicorn gateway process."""
    return platform.start_gateway()


def _files(served: Served, split: str, n: int) -> Files:
    manifest = served.run.manifest
    return [
        ("images", (Path(r.image).name, manifest.path_of(r).read_bytes(), "image/png"))
        for r in manifest.in_split(split)[:n]
    ]


def test_predictions_through_the_gateway_equal_the_eager_model(
    served: Served, gateway: str, clinician: dict[str, str]
) -> None:
    files = _files(served, "test", 5)
    response = httpx.post(f"{gateway}/v1/predictions", params={"top_k": 7}, files=files, headers=clinician, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    trained = served.run.trained
    batch = torch.stack([trained.preprocessing.eval_transform()(load_rgb(f[1][1])) for f in files])
    calibration = served.exported.contract.calibration
    assert calibration is not None
    eager = calibrated_probabilities(np.log(trained.probabilities(batch).numpy()), calibration)
    assert body["model_version"] == 1 and body["succeeded"] == 5 and "not a diagnosis" in body["disclaimer"]
    for result, (_, (name, _, _)), expected in zip(body["results"], files, eager, strict=True):
        assert result["status"] == "ok" and result["file"] == name and "not a diagnosis" in result["disclaimer"]
        got = {c["label"]: c["probability"] for c in result["top_k"]}
        np.testing.assert_allclose([got[c] for c in trained.classes], expected, atol=1e-4)
        assert isinstance(result["abstain"], bool) and result["calibrated"]
        in_set = [c["label"] for c in result["prediction_set"]]
        assert in_set and in_set[0] == result["top_k"][0]["label"] and result["set_coverage"] == 0.9
        mixed = {"mel", "bcc", "akiec"} & set(in_set) and set(in_set) - {"mel", "bcc", "akiec"}
        assert ("malignant_not_ruled_out" in result["abstain_reasons"]) is bool(mixed)
        assert result["abstain"] is bool(result["abstain_reasons"]) and result["label"] in trained.classes


def test_concurrent_requests_through_the_gateway_are_batched(
    served: Served, gateway: str, clinician: dict[str, str]
) -> None:
    files = _files(served, "val", 1)

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=gateway, headers=clinician, timeout=60) as http:
            replies = await asyncio.gather(*(http.post("/v1/predictions", files=files) for _ in range(32)))
        return [r.status_code for r in replies]

    async def stats() -> dict[int, int]:
        client = TritonClient(served.triton.url)
        try:
            model = next(m for m in (await client.statistics(served.name))["model_stats"] if m["version"] == "1")
        finally:
            await client.close()
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model["batch_stats"]}

    before = asyncio.run(stats())
    assert asyncio.run(go()) == [200] * 32
    after = asyncio.run(stats())
    grew = {size: n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
    assert sum(size * n for size, n in grew.items()) == 32
    assert max(grew) > 1, f"no batch larger than one image: {grew}"


def test_bad_images_are_named_and_the_others_answered(
    served: Served, client: TestClient, clinician: dict[str, str]
) -> None:
    good = _files(served, "val", 1)
    files = [
        *good,
        ("images", ("notes.txt", b"not an image", "text/plain")),
        ("images", ("tiny.png", _png(Image.new("RGB", (4, 4))), "image/png")),
    ]
    response = client.post("/v1/predictions", files=files, headers=clinician)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["file"], r["status"]) for r in results] == [
        (good[0][1][0], "ok"),
        ("notes.txt", "error"),
        ("tiny.png", "error"),
    ]
    assert results[1]["reason"] == "not_an_image" and results[2]["reason"] == "too_small"

    only_bad = client.post("/v1/predictions", files=files[1:], headers=clinician)
    assert only_bad.status_code == 422
    assert [r["file"] for r in only_bad.json()["results"]] == ["notes.txt", "tiny.png"]


def test_request_limits_and_options(served: Served, client: TestClient, clinician: dict[str, str]) -> None:
    nine = _files(served, "train", 9)
    too_many = client.post("/v1/predictions", files=nine, headers=clinician)
    assert too_many.status_code == 422 and too_many.json()["reason"] == "too_many_images"
    assert "at most 8" in too_many.json()["detail"]
    assert client.post("/v1/predictions", headers=clinician).status_code == 422
    assert client.post("/v1/predictions", files=nine[:1], params={"top_k": 0}, headers=clinician).status_code == 422
    unknown = client.post("/v1/predictions", files=nine[:1], params={"model": "nothing"}, headers=clinician)
    assert unknown.status_code == 503 and unknown.json()["reason"] == "no_model_deployed"


def test_explain_returns_a_heat_map(served: Served, client: TestClient, clinician: dict[str, str]) -> None:
    response = client.post(
        "/v1/predictions", files=_files(served, "test", 1), params={"explain": "true"}, headers=clinician
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["explanation_png"]


def test_only_clinician_keys_predict(served: Served, client: TestClient, platform: ServingPlatform) -> None:
    files = _files(served, "test", 1)
    assert client.post("/v1/predictions", files=files).status_code == 401
    assert client.post("/v1/predictions", files=files, headers=platform.headers(Scope.ENGINEER)).status_code == 403


def test_triton_down_is_503_and_the_gateway_recovers_by_itself(
    served: Served, platform: ServingPlatform, clinician: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    files = _files(served, "test", 1)
    with platform.in_process(triton_url=f"127.0.0.1:{port}") as client:
        down = client.post("/v1/predictions", files=files, headers=clinician)
        assert down.status_code == 503 and down.json()["reason"] == "inference_unavailable"
        assert f"127.0.0.1:{port}" in down.json()["detail"]
        ready = client.get("/v1/health/ready", headers=platform.headers(Scope.ADMIN)).json()
        assert ready["status"] == "unready" and ready["checks"]["triton"] != "ok"

        triton = LocalTriton(str(served.store.root / "models"), tmp_path / "triton", http_port=port)
        triton.start()  # a fresh server: nothing loaded until the gateway's upkeep loads the live version
        try:
            deadline = time.monotonic() + 120
            while (answer := client.post("/v1/predictions", files=files, headers=clinician)).status_code != 200:
                assert answer.status_code == 503, answer.text
                assert time.monotonic() < deadline, "the gateway did not recover"
                time.sleep(0.5)
            assert (
                client.get("/v1/health/ready", headers=platform.headers(Scope.ADMIN)).json()["checks"]["triton"] == "ok"
            )
            assert triton.process is not None
            os.killpg(triton.process.pid, signal.SIGKILL)  # Triton killed mid-service
            triton.process.wait(timeout=30)
        finally:
            triton.stop()
        killed = client.post("/v1/predictions", files=files, headers=clinician)
        assert killed.status_code == 503 and killed.json()["reason"] == "inference_unavailable"
        assert killed.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/health/live").status_code == 200


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
