"""Pretrained weights from the object store: ``store:incoming/{owner}/...`` references.

Over the API a training (or experiment) job names its starting weights by a torchvision weights name or
by a state_dict file its owner put in the object store, written ``store:incoming/{owner}/<path>.pth``
(or ``.pt``). The reference is checked three times:

1. its form, when the job's parameters are validated (:func:`store_key`): a valid object key (no ``..``,
   no empty parts) under ``incoming/``, ending in ``.pth`` or ``.pt``;
2. at submission, where the key's owner is known (:func:`check_stored`): under the job owner's own
   ``incoming/{owner}/`` prefix, present, and at most :data:`MAX_WEIGHTS_BYTES`;
3. by the worker before the job runs (:func:`fetch`): the same checks again, then the file is downloaded
   into ``{cache_root}/weights/<key>``, where :func:`~dermasynth.classifier.models.resolve_weights`
   finds it and loads it with ``torch.load(weights_only=True)``.

The job's configuration keeps the ``store:`` reference (not the worker's local path), so a job resumed
on another worker, the run's stored options and experiment reports all name the same weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dermasynth.config import get_settings
from dermasynth.data.uploads import INCOMING_PREFIX
from dermasynth.storage.base import InvalidKey, ObjectNotFound, ObjectStore, check_key

STORE_SCHEME = "store:"
WEIGHTS_SUFFIXES = (".pth", ".pt")
MAX_WEIGHTS_BYTES = 1024**3
"""The largest weights file accepted (VGG16's ImageNet state_dict, the largest supported model, is 528 MB)."""
FETCHED_FOLDER = "weights"
"""Fetched weights lie under ``{cache_root}/weights/``."""


class WeightsRefused(ValueError):
    """A ``store:`` weights reference that is malformed, outside the owner's prefix, missing or too large."""


def _accepted(owner: str = "{owner}") -> str:
    suffixes = " or ".join(WEIGHTS_SUFFIXES)
    return (
        f"accepted: store:{INCOMING_PREFIX}/{owner}/<path>{WEIGHTS_SUFFIXES[0]} ({suffixes}, "
        f"at most {MAX_WEIGHTS_BYTES} bytes)"
    )


def is_store_reference(weights: str | None) -> bool:
    """Whether ``weights`` names a file of the object store (``store:KEY``)."""
    return weights is not None and weights.startswith(STORE_SCHEME)


def store_key(reference: str) -> str:
    """The object key of a ``store:`` reference, checked for its form only (not its owner).

    Raises:
        WeightsRefused: not ``store:incoming/...`` with a valid key ending in ``.pth``/``.pt``.
    """
    key = reference.removeprefix(STORE_SCHEME)
    try:
        check_key(key)
    except InvalidKey as exc:
        raise WeightsRefused(f"weights {reference!r}: {exc}; {_accepted()}") from None
    if not key.startswith(f"{INCOMING_PREFIX}/") or key.count("/") < 2 or not key.endswith(WEIGHTS_SUFFIXES):
        raise WeightsRefused(f"weights {reference!r} is not a state_dict file under an owner's prefix; {_accepted()}")
    return key


def check_stored(store: ObjectStore, reference: str, owner: str, max_bytes: int = MAX_WEIGHTS_BYTES) -> str:
    """The key of ``reference`` once it is known to be ``owner``'s, present and small enough.

    The owner is checked before the store is asked, so another owner's files are never probed.

    Raises:
        WeightsRefused: malformed, another owner's prefix, no such object, or larger than ``max_bytes``.
    """
    key = store_key(reference)
    if not key.startswith(f"{INCOMING_PREFIX}/{owner}/"):
        raise WeightsRefused(
            f"weights {reference!r} lie outside your own {INCOMING_PREFIX}/{owner}/ prefix; {_accepted(owner)}"
        )
    try:
        size = store.size(key)
    except ObjectNotFound:
        raise WeightsRefused(
            f"weights {reference!r}: no object under {key!r}; put the state_dict file there first ({_accepted(owner)})"
        ) from None
    if size > max_bytes:
        raise WeightsRefused(f"weights {reference!r} hold {size} bytes, more than the {max_bytes} accepted")
    return key


def local_path(reference: str, cache_root: Path | None = None) -> Path:
    """Where a worker keeps its copy of ``reference``: ``{cache_root}/weights/<key>`` (settings' cache by default).

    Raises:
        WeightsRefused: for a malformed reference.
    """
    root = cache_root if cache_root is not None else get_settings().cache_root
    return root / FETCHED_FOLDER / store_key(reference)


def fetch(
    store: ObjectStore, reference: str, owner: str, cache_root: Path | None = None, max_bytes: int = MAX_WEIGHTS_BYTES
) -> Path:
    """Download ``reference`` (checked again for ``owner``) into the cache, replacing an older copy at once.

    Raises:
        WeightsRefused: as :func:`check_stored`, or the object grew past ``max_bytes`` while downloading.
    """
    key = check_stored(store, reference, owner, max_bytes)
    target = local_path(reference, cache_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".fetching-", dir=target.parent)
    os.close(fd)
    try:
        try:
            store.get_file(key, Path(partial))
        except ObjectNotFound:
            raise WeightsRefused(f"weights {reference!r}: the object under {key!r} was removed") from None
        if (size := os.path.getsize(partial)) > max_bytes:
            raise WeightsRefused(f"weights {reference!r} hold {size} bytes, more than the {max_bytes} accepted")
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target
