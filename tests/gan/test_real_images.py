"""The GAN's real images come from the shared decoded cache and equal a fresh decode."""

from __future__ import annotations

from pathlib import Path

import torch

from dermasynth.data.decoded_cache import CACHE_DIR
from dermasynth.data.manifest import Manifest
from dermasynth.gan.real_images import load_real_images, training_records


def test_cached_real_images_equal_a_fresh_decode(demo_dataset: Manifest, tmp_path: Path) -> None:
    records, classes = training_records(demo_dataset)
    cached = load_real_images(demo_dataset, records, classes, 16, cache_root=tmp_path)
    fresh = load_real_images(demo_dataset, records, classes, 16, use_cache=False)
    assert len(list((tmp_path / CACHE_DIR).iterdir())) == 1
    assert cached.images.dtype == torch.uint8 and cached.images.shape == (len(records), 3, 16, 16)
    assert torch.equal(cached.images, fresh.images) and torch.equal(cached.labels, fresh.labels)
    assert cached.records == records
