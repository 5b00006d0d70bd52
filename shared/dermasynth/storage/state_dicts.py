"""Checkpoints through the object store: torch state dicts serialized to bytes, written atomically.

The classifier and the GAN both keep ``checkpoint.pth`` (the latest, for resume) and one file per
epoch or snapshot beside it; a store's ``put_bytes`` never exposes a half-written object, so a crash
mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from dermasynth.storage.base import ObjectStore

LATEST = "checkpoint.pth"


def save_state(store: ObjectStore, key: str, state: dict[str, Any]) -> None:
    """Serialize ``state`` (tensors, numbers, strings, dicts, lists) with ``torch.save`` under ``key``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.put_bytes(key, buffer.getvalue())


def load_state(store: ObjectStore, key: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a state saved by :func:`save_state` (``weights_only``: no code is unpickled).

    Raises:
        ObjectNotFound: if nothing is stored under ``key``.
    """
    data = store.get_bytes(key)
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
