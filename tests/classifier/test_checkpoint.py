from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dermasynth.classifier.checkpoint import capture_rng, load_checkpoint, load_trained, restore_rng
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore, ObjectNotFound
from dermasynth.storage.state_dicts import load_state, save_state


@pytest.fixture(scope="module")
def run(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> FilesystemStore:
    store = FilesystemStore(tmp_path_factory.mktemp("run"))
    config = TrainConfig(model="resnet18", image_size=16, epochs=2, batch_size=8, num_workers=0, max_steps_per_epoch=1)
    fit(config, demo_dataset, store)
    return store


def _draws(generator: torch.Generator) -> tuple[float, float, float, float]:
    return (torch.rand(1).item(), float(np.random.rand()), random.random(), torch.rand(1, generator=generator).item())


def test_rng_states_survive_a_checkpoint_round_trip(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(11)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    store = FilesystemStore(tmp_path)
    save_state(store, "rng.pth", {"rng": capture_rng(generator)})
    expected = _draws(generator)
    _draws(generator)
    restore_rng(load_state(store, "rng.pth")["rng"], generator)
    assert _draws(generator) == expected


def test_load_trained_gives_an_eval_model_with_its_preprocessing(run: FilesystemStore, demo_dataset: Manifest) -> None:
    trained = load_trained(run)
    assert not trained.model.training
    assert trained.classes == demo_dataset.classes
    assert trained.config.model == "resnet18" and trained.preprocessing.image_size == 16
    best_epoch = load_state(run, "best.pth")["epoch"]
    assert trained.epoch == best_epoch
    batch = torch.randn(3, 3, 16, 16)
    assert trained.features(batch).shape == (3, 512)
    probs = trained.probabilities(batch)
    assert probs.shape == (3, len(trained.classes)) and torch.allclose(probs.sum(1), torch.ones(3))
    latest = load_trained(run, "latest")
    assert latest.epoch == 2
    state = load_checkpoint(run)
    assert state is not None
    assert all(torch.equal(v, state["model"][k]) for k, v in latest.model.state_dict().items())


def test_load_trained_refuses_bad_requests(run: FilesystemStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="which='first' is not accepted"):
        load_trained(run, "first")
    with pytest.raises(ObjectNotFound):
        load_trained(FilesystemStore(tmp_path / "empty"))
    assert load_checkpoint(FilesystemStore(tmp_path / "empty")) is None
    other = FilesystemStore(tmp_path / "old")
    save_state(other, "best.pth", {**load_state(run, "best.pth"), "format": 0})
    with pytest.raises(ValueError, match="checkpoint format 0"):
        load_trained(other)
