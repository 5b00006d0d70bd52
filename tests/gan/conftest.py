"""Fixtures of the GAN tests: tiny configurations and one briefly trained GAN shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dermasynth.data.manifest import Manifest
from dermasynth.gan.config import GanConfig
from dermasynth.gan.training_loop import train_gan
from dermasynth.storage import FilesystemStore


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The GAN tests run tiny networks: one intra-op thread is faster than several on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**changes: object) -> GanConfig:
    """A GAN small enough to train a few steps in well under a second per step on one CPU core."""
    options: dict[str, object] = {
        "image_size": 16,
        "batch_size": 8,
        "z_dim": 16,
        "w_dim": 32,
        "channel_base": 128,
        "max_channels": 16,
        "steps": 4,
        "checkpoint_every": 2,
        "snapshot_every": 2,
        "grid_every": 2,
        "grid_size": 2,
        "log_every": 2,
        "device": "cpu",
        "seed": 3,
    }
    options.update(changes)
    return GanConfig.model_validate(options)


@pytest.fixture(scope="session")
def tiny_gan(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GAN folder trained 4 steps at 16 px on the shared demo dataset (for sampling and evaluation tests)."""
    folder = tmp_path_factory.mktemp("gan")
    train_gan(tiny_config(), demo_dataset, FilesystemStore(folder))
    return folder
