"""A view of an object store under a key prefix, e.g. ``runs/{job_id}``: engines write relative keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from dermasynth.storage.base import ObjectStore, check_key


class PrefixedStore:
    """Every key is ``{prefix}/{key}`` in the inner store; listings come back relative to the prefix."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = check_key(prefix.strip("/"))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.inner.put_bytes(self._key(key), data, content_type)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(self._key(key))

    def put_file(self, key: str, path: Path) -> None:
        self.inner.put_file(self._key(key), path)

    def get_file(self, key: str, path: Path) -> None:
        self.inner.get_file(self._key(key), path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self._key(key))

    def size(self, key: str) -> int:
        return self.inner.size(self._key(key))

    def list(self, prefix: str = "") -> list[str]:
        start = len(self.prefix) + 1
        return [key[start:] for key in self.inner.list(f"{self.prefix}/{prefix}")]

    def delete(self, key: str) -> None:
        self.inner.delete(self._key(key))

    def copy(self, src: str, dst: str) -> None:
        self.inner.copy(self._key(src), self._key(dst))

    def presigned_url(self, key: str, expires: timedelta) -> str | None:
        return self.inner.presigned_url(self._key(key), expires)
