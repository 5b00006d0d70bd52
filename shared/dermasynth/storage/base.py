"""The ObjectStore protocol every storage backend implements, and the key rules they share.

Keys are ``/``-separated relative paths such as ``datasets/{id}/manifest.csv`` or
``runs/{job_id}/checkpoint.pth``. They never start with ``/``, never hold ``..``, ``\\`` or empty parts,
so a key can never reach outside the store.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

_KEY_PART = re.compile(r"^[A-Za-z0-9._\-=+@,]+$")


class ObjectNotFound(KeyError):
    """No object under this key."""

    def __str__(self) -> str:
        return f"no object under key {self.args[0]!r}"


class InvalidKey(ValueError):
    """A key that breaks the key rules."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKey` saying why."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise InvalidKey(f"object key {key!r} must be a non-empty relative path without a leading or trailing '/'")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _KEY_PART.match(part):
            raise InvalidKey(
                f"object key {key!r}: part {part!r} is not accepted; use letters, digits and ._-=+@, between single '/'"
            )
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a valid key optionally ending in '/'."""
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


@runtime_checkable
class ObjectStore(Protocol):
    """Bytes under keys: the only way services touch datasets, checkpoints and models."""

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key``, replacing what was there; readers never see a partial object."""

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes. Raises :class:`ObjectNotFound`."""

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file."""

    def get_file(self, key: str, path: Path) -> None:
        """Download to a local file (parents created). Raises :class:`ObjectNotFound`."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    def size(self, key: str) -> int:
        """The object's size in bytes. Raises :class:`ObjectNotFound`."""

    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix``, recursively, sorted."""

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""

    def copy(self, src: str, dst: str) -> None:
        """Copy an object inside the store (server-side where the backend can). Raises :class:`ObjectNotFound`."""

    def presigned_url(self, key: str, expires: timedelta) -> str | None:
        """A time-limited download URL, or None when the backend cannot make one (stream instead)."""
