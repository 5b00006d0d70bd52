from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dermasynth.serving.contract import INPUT_NAME
from dermasynth.serving.export import onnx_session
from dermasynth.serving.inference_client import InferenceUnavailable, TritonClient, VersionUnavailable
from services.inference.launcher import free_port
from tests.triton_fixtures import Served


def test_an_unreachable_server_is_unavailable_not_an_error() -> None:
    async def go() -> None:
        client = TritonClient(f"127.0.0.1:{free_port()}", timeout_s=5)
        try:
            assert not await client.server_ready()
            assert not await client.model_ready("classifier", 1)
            with pytest.raises(InferenceUnavailable, match="not reachable"):
                await client.infer("classifier", 1, np.zeros((1, 3, 32, 32), np.uint8))
        finally:
            await client.close()

    asyncio.run(go())


def test_infer_returns_the_exported_models_outputs(served: Served) -> None:
    size = served.run.trained.preprocessing.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (5, 3, size, size), dtype=np.uint8)
    logits, ood, cams = onnx_session(served.exported.onnx).run(None, {INPUT_NAME: pixels})

    async def go() -> None:
        client = TritonClient(served.triton.url)
        try:
            assert await client.server_ready() and await client.model_ready(served.name, served.version)
            out = await client.infer(served.name, served.version, pixels)
            assert out.model_version == served.version
            np.testing.assert_allclose(out.logits, logits, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out.ood_scores, ood.ravel(), rtol=1e-5)
            assert out.cams is None  # not asked for
            with_cam = await client.infer(served.name, served.version, pixels, cam=True)
            assert with_cam.cams is not None
            np.testing.assert_allclose(with_cam.cams, cams, rtol=1e-4, atol=1e-5)
            with pytest.raises(VersionUnavailable, match="version 9"):
                await client.infer(served.name, 9, pixels)
            with pytest.raises(ValueError, match="uint8"):
                await client.infer(served.name, served.version, pixels.astype(np.float32))
        finally:
            await client.close()

    asyncio.run(go())


def test_concurrent_requests_are_batched_by_the_server(served: Served) -> None:
    size = served.run.trained.preprocessing.image_size
    pixels = np.random.default_rng(1).integers(0, 256, (1, 3, size, size), dtype=np.uint8)

    async def go() -> dict[int, int]:
        client = TritonClient(served.triton.url)
        try:
            before = _executions(await client.statistics(served.name))
            outs = await asyncio.gather(*(client.infer(served.name, served.version, pixels) for _ in range(48)))
            assert all(np.allclose(o.logits, outs[0].logits, atol=1e-5) for o in outs)
            after = _executions(await client.statistics(served.name))
        finally:
            await client.close()
        return {size: after[size] - before.get(size, 0) for size in after}

    executions = asyncio.run(go())
    assert sum(size * n for size, n in executions.items()) == 48
    assert any(size > 1 and n > 0 for size, n in executions.items()), executions


def _executions(stats: dict) -> dict[int, int]:
    """Batch size -> executions, from Triton's statistics of the served version."""
    (model,) = [m for m in stats["model_stats"] if m["version"] == "1"]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model["batch_stats"]}
