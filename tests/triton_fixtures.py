"""Session fixtures for serving tests: a classifier trained on generated lesions, exported, and served
by one real tritonserver shared by every test that asks for it (registered in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dermasynth.classifier.checkpoint import TrainedModel, load_trained
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.data.manifest import Manifest
from dermasynth.serving.export import ExportedModel, export_trained
from dermasynth.serving.inference_client import TritonClient
from dermasynth.serving.registry import Deployer, ModelRegistry
from dermasynth.serving.schemas import ModelLineage
from dermasynth.storage import FilesystemStore
from services.inference.launcher import LocalTriton

log = logging.getLogger(__name__)

SERVED_MODEL = "classifier"


@dataclass
class TrainedRun:
    """A finished training run on the session's generated dataset."""

    store: FilesystemStore
    manifest: Manifest
    trained: TrainedModel


@dataclass
class Served:
    """The session's model repository, its tritonserver and the live model on it."""

    store: FilesystemStore
    registry: ModelRegistry
    triton: LocalTriton
    exported: ExportedModel
    run: TrainedRun
    name: str = SERVED_MODEL
    version: int = 1

    def deploy(self, name: str, version: int, settle_s: float = 0.5) -> None:
        """Deploy ``version`` of ``name`` on the session's server (from synchronous test code)."""

        async def go() -> None:
            client = TritonClient(self.triton.url)
            try:
                await Deployer(self.registry, client, settle_s=settle_s).deploy(name, version)
            finally:
                await client.close()

        asyncio.run(go())


@pytest.fixture(scope="session")
def trained_run(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """resnet18 at 48 px (its last stage 2x2, so the served graph has class activation maps) trained
    for a few epochs on the generated demo lesions."""
    store = FilesystemStore(tmp_path_factory.mktemp("run"))
    config = TrainConfig(model="resnet18", image_size=48, epochs=8, batch_size=32, num_workers=0, seed=0)
    fit(config, demo_dataset, store)
    return TrainedRun(store, demo_dataset, load_trained(store, "best"))


@pytest.fixture(scope="session")
def exported_model(trained_run: TrainedRun) -> ExportedModel:
    """The trained run exported for serving (ONNX with CAM, eager weights, calibrated contract)."""
    return export_trained(trained_run.trained, trained_run.manifest)


@pytest.fixture(scope="session")
def served(
    exported_model: ExportedModel, trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One tritonserver for the session, serving version 1 of ``classifier`` from a filesystem store."""
    root = tmp_path_factory.mktemp("serving")
    store = FilesystemStore(root / "store")
    registry = ModelRegistry(store)
    registry.register(SERVED_MODEL, exported_model, ModelLineage(run="runs/test", dataset="demo"))
    triton = LocalTriton(str(store.root / "models"), root / "triton")
    triton.start()
    served = Served(store, registry, triton, exported_model, trained_run)
    try:
        served.deploy(SERVED_MODEL, 1)
        yield served
    finally:
        triton.stop()


def copy_version(served: Served, name: str) -> int:
    """Register the session's exported model once more under ``name``; returns the new version."""
    return served.registry.register(name, served.exported, ModelLineage(run="runs/test")).version
