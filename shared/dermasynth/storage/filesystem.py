"""A folder on local disk as an object store: the embedded default for laptops and tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from dermasynth.storage.base import InvalidKey, ObjectNotFound, check_key, check_prefix

_TMP_PREFIX = ".tmp-"


class FilesystemStore:
    """Objects are files under ``root``; writes go to a temporary file first and are renamed into place.

    Symbolic links are never followed out of ``root``: every path is resolved and must stay under it
    (a key whose resolved path leaves the root is refused as :class:`InvalidKey`), and listings skip
    links that point outside.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InvalidKey(f"object key {key!r} leads outside the store (a symbolic link); refused")
        return resolved

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path.stat().st_size

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith(_TMP_PREFIX) and self._inside(path):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop folders left empty, never the root
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty, already gone, or refilled by another writer
                break

    def copy(self, src: str, dst: str) -> None:
        source = self._path(src)
        if not source.is_file():
            raise ObjectNotFound(src)
        self.put_file(dst, source)

    def presigned_url(self, key: str, expires: timedelta) -> str | None:
        check_key(key)
        return None
