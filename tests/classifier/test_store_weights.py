"""``store:incoming/{owner}/...`` weights: their form, their owner, their size, and the fetched copy training loads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torchvision.models

from dermasynth.classifier import store_weights
from dermasynth.classifier.models import build_model, head_of
from dermasynth.storage import FilesystemStore

OWN = "store:incoming/team-a/weights/resnet18.pth"


def _state_dict_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("reference", "said"),
    [
        ("store:incoming/team-a/../team-b/w.pth", "'..' is not accepted"),
        ("store:incoming/team-a//w.pth", "part '' is not accepted"),
        ("store:/incoming/team-a/w.pth", "leading or trailing '/'"),
        ("store:runs/0123/best.pth", "not a state_dict file under an owner's prefix"),
        ("store:incoming/w.pth", "not a state_dict file under an owner's prefix"),
        ("store:incoming/team-a/notes.txt", "not a state_dict file under an owner's prefix"),
    ],
)
def test_malformed_references_are_refused_saying_what_is_accepted(reference: str, said: str) -> None:
    with pytest.raises(store_weights.WeightsRefused) as refused:
        store_weights.store_key(reference)
    assert said in str(refused.value) and "accepted: store:incoming/{owner}/<path>.pth" in str(refused.value)


def test_only_the_owners_own_present_and_bounded_files_pass(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    store.put_bytes("incoming/team-a/weights/resnet18.pth", b"x" * 100)
    store.put_bytes("incoming/team-b/weights/resnet18.pth", b"x" * 100)
    assert store_weights.check_stored(store, OWN, "team-a") == "incoming/team-a/weights/resnet18.pth"
    with pytest.raises(store_weights.WeightsRefused, match="outside your own incoming/team-a/ prefix"):
        store_weights.check_stored(store, "store:incoming/team-b/weights/resnet18.pth", "team-a")
    with pytest.raises(store_weights.WeightsRefused, match=r"no object under 'incoming/team-a/none\.pth'"):
        store_weights.check_stored(store, "store:incoming/team-a/none.pth", "team-a")
    with pytest.raises(store_weights.WeightsRefused, match="hold 100 bytes, more than the 99 accepted"):
        store_weights.check_stored(store, OWN, "team-a", max_bytes=99)


def test_fetched_weights_are_what_build_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    source = torchvision.models.resnet18(weights=None)
    store = FilesystemStore(tmp_path / "store")
    store.put_bytes("incoming/team-a/weights/resnet18.pth", _state_dict_bytes(source))
    with pytest.raises(FileNotFoundError, match="were not fetched"):
        build_model("resnet18", 3, OWN)

    path = store_weights.fetch(store, OWN, "team-a", tmp_path / "cache")
    assert path == tmp_path / "cache" / "weights" / "incoming" / "team-a" / "weights" / "resnet18.pth"
    assert [p.name for p in path.parent.iterdir()] == ["resnet18.pth"]  # no partial download left behind
    monkeypatch.setenv("DERMASYNTH_CACHE_ROOT", str(tmp_path / "cache"))
    from dermasynth.config import get_settings

    get_settings.cache_clear()
    try:
        model = build_model("resnet18", 3, OWN)
        head_name, head = head_of(model)
        assert head.out_features == 3
        expected = source.state_dict()
        for name, tensor in model.state_dict().items():
            if not name.startswith(head_name + "."):
                assert torch.equal(tensor, expected[name]), name
        with pytest.raises(ValueError, match=r"is not a mobilenet_v3_small state_dict|does not fit mobilenet_v3_small"):
            build_model("mobilenet_v3_small", 3, OWN)
    finally:
        get_settings.cache_clear()


def test_fetch_checks_the_owner_again(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    store.put_bytes("incoming/team-b/w.pth", b"x")
    with pytest.raises(store_weights.WeightsRefused, match="outside your own incoming/team-a/ prefix"):
        store_weights.fetch(store, "store:incoming/team-b/w.pth", "team-a", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
