from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dermasynth.storage import FilesystemStore, ObjectNotFound
from dermasynth.storage.state_dicts import load_state, save_state


def test_state_round_trips(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    model = torch.nn.Linear(3, 2)
    save_state(store, "runs/r/checkpoint.pth", {"model": model.state_dict(), "epoch": 4, "classes": ["a", "b"]})
    state = load_state(store, "runs/r/checkpoint.pth")
    assert state["epoch"] == 4 and state["classes"] == ["a", "b"]
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    with pytest.raises(ObjectNotFound):
        load_state(store, "runs/r/missing.pth")
