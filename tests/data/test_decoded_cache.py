"""The decoded-image cache: exact pixels, reuse, rebuilds on change or damage, the budget, the object store."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from dermasynth.data import decoded_cache
from dermasynth.data.dataset import CachedBatches
from dermasynth.data.decoded_cache import META, cache_key, open_decoded_cache
from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest
from dermasynth.data.transforms import Preprocessing
from dermasynth.storage import FilesystemStore


@pytest.fixture()
def manifest(tmp_path: Path) -> Manifest:
    return make_demo_dataset(tmp_path / "data", count=40, size=32, seed=3)


def test_pixels_equal_the_per_image_transforms(manifest: Manifest, tmp_path: Path) -> None:
    cache = open_decoded_cache(manifest, 24, cache_root=tmp_path / "c", progress=False)
    assert cache is not None
    rows = np.array([7, 2, 31, 2])
    images = [load_rgb(manifest.path_of(manifest.records[i])) for i in rows]
    expected_eval = torch.stack([Preprocessing(image_size=24).pixels_transform()(im) for im in images])
    assert torch.equal(cache.eval_batch(rows), expected_eval)
    pixels, extents = cache.train_batch(rows)
    for k, image in enumerate(images):
        resized = v2.functional.pil_to_tensor(v2.Resize(24, antialias=True)(image))
        h, w = extents[k].tolist()
        assert (h, w) == tuple(resized.shape[1:])
        assert torch.equal(pixels[k, :, :h, :w], resized)
        assert torch.equal(pixels[k, :, :h, w:], resized[:, :, -1:].expand(-1, -1, pixels.shape[3] - w))


def test_reused_when_nothing_changed(manifest: Manifest, tmp_path: Path) -> None:
    first = open_decoded_cache(manifest, 24, cache_root=tmp_path, progress=False)
    assert first is not None
    stamp = (first.folder / META).stat().st_mtime_ns
    again = open_decoded_cache(Manifest.read(manifest.root), 24, cache_root=tmp_path, progress=False)
    assert again is not None and again.folder == first.folder
    assert (again.folder / META).stat().st_mtime_ns == stamp


def test_new_cache_when_manifest_or_preprocessing_changes(manifest: Manifest, tmp_path: Path) -> None:
    base = open_decoded_cache(manifest, 24, cache_root=tmp_path, progress=False)
    smaller = Manifest(manifest.records[:-1], manifest.root)
    changed = Manifest(
        [*manifest.records[:-1], type(manifest.records[-1])(**{**vars(manifest.records[-1]), "sha256": "0" * 64})],
        manifest.root,
    )
    others = [
        open_decoded_cache(smaller, 24, cache_root=tmp_path, progress=False),
        open_decoded_cache(changed, 24, cache_root=tmp_path, progress=False),
        open_decoded_cache(manifest, 28, cache_root=tmp_path, progress=False),
        open_decoded_cache(manifest, 24, "none", cache_root=tmp_path, progress=False),
    ]
    folders = {c.folder for c in [base, *others] if c is not None}
    assert len(folders) == 5
    assert others[2] is not None and others[2].eval.shape[1:] == (28, 28, 3)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "no_meta"])
def test_damaged_cache_is_detected_and_rebuilt(
    manifest: Manifest, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = open_decoded_cache(manifest, 24, cache_root=tmp_path, progress=False)
    assert cache is not None
    folder, good = cache.folder, np.array(cache.train)
    del cache
    target = folder / "train.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[-100] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        (folder / META).unlink()
    with caplog.at_level(logging.WARNING, logger="dermasynth.data.decoded_cache"):
        rebuilt = open_decoded_cache(manifest, 24, cache_root=tmp_path, progress=False)
    assert "rebuilding" in caplog.text
    assert rebuilt is not None and rebuilt.folder == folder
    assert np.array_equal(np.asarray(rebuilt.train), good)


def test_over_budget_returns_none_with_a_reason(
    manifest: Manifest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dermasynth.data.decoded_cache"):
        assert open_decoded_cache(manifest, 24, cache_root=tmp_path, max_bytes=1000, progress=False) is None
    assert "per-image path" in caplog.text and "budget" in caplog.text
    assert not list((tmp_path / "decoded").glob("*"))


def test_shared_through_the_object_store(manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemStore(tmp_path / "store")
    built = open_decoded_cache(manifest, 24, cache_root=tmp_path / "worker1", store=store, progress=False)
    assert built is not None
    key = cache_key(manifest.records, decoded_cache.Geometry(24))
    assert store.exists(f"caches/decoded/{key}/{META}")

    def no_decoding(*_: object) -> None:
        raise AssertionError("a cache in the object store must be fetched, not decoded again")

    monkeypatch.setattr(decoded_cache, "load_rgb", no_decoding)
    fetched = open_decoded_cache(manifest, 24, cache_root=tmp_path / "worker2", store=store, progress=False)
    assert fetched is not None and fetched.folder.parent.parent == tmp_path / "worker2"
    assert np.array_equal(np.asarray(fetched.eval), np.asarray(built.eval))


def test_rows_of_unknown_record_names_it(manifest: Manifest, tmp_path: Path) -> None:
    cache = open_decoded_cache(Manifest(manifest.records[:5], manifest.root), 24, cache_root=tmp_path, progress=False)
    assert cache is not None
    with pytest.raises(KeyError, match=manifest.records[10].image):
        cache.rows_of([manifest.records[10]])


def test_cached_batches_carry_each_images_loss_weight(manifest: Manifest, tmp_path: Path) -> None:
    cache = open_decoded_cache(manifest, 24, cache_root=tmp_path, progress=False)
    assert cache is not None
    records = manifest.records[:10]
    order = [3, 9, 0, 4, 4, 7]
    weights = [float(i) for i in range(10)]  # each record's weight names it
    batches = CachedBatches(cache, records, list(range(10)), order, 4, drop_last=False, weights=weights)
    seen = [(batch[2].tolist(), batch[3].tolist()) for batch in batches]
    assert seen == [([3, 9, 0, 4], [3.0, 9.0, 0.0, 4.0]), ([4, 7], [4.0, 7.0])]
    plain = next(iter(CachedBatches(cache, records, list(range(10)), order, 4)))
    assert len(plain) == 3  # without weights: (pixels, extents, targets)
