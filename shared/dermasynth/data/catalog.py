"""Datasets in the object store, and their local copies on the workers.

A published dataset lives under ``datasets/{id}/`` (``manifest.csv``, ``images/...`` and, when it was
imported, ``import_report.json``). Each entry names its owner (a team); ``catalog/owners/{owner}/{id}``
indexes an owner's datasets, so listing one owner's datasets reads only theirs.
Its catalog entry ``catalog/datasets/{id}.json`` is written last:
a dataset exists once, and only once, its entry does, so a publish that fails half-way is invisible
and is cleaned up at once. Datasets never change after publishing, so a worker's cached copy (checked
against the manifest's sha256 on download) stays valid for good.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from dermasynth.data.importer import REPORT_NAME
from dermasynth.data.manifest import MANIFEST_NAME, Manifest, ManifestError, Record
from dermasynth.data.schemas import DatasetInfo
from dermasynth.data.stats import dataset_stats
from dermasynth.storage.base import ObjectNotFound, ObjectStore

CATALOG_PREFIX = "catalog/datasets"
OWNERS_PREFIX = "catalog/owners"
DATASETS_PREFIX = "datasets"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,79}$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._\-=+@,]")
_COMPLETE = ".complete"
_TRANSFER_THREADS = 8


class DatasetNotFound(KeyError):
    """No published dataset with this id."""

    def __str__(self) -> str:
        return f"no dataset with id {self.args[0]!r}"


def new_dataset_id() -> str:
    """A fresh dataset id (``ds-`` and 12 hex digits)."""
    return f"ds-{uuid.uuid4().hex[:12]}"


def check_dataset_id(dataset_id: str) -> str:
    """Return ``dataset_id`` if it is well formed, else raise ValueError saying what is accepted."""
    if not _ID.match(dataset_id):
        raise ValueError(
            f"dataset id {dataset_id!r} is not valid: 1-80 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return dataset_id


class DatasetCatalog:
    """Publish, list, describe and fetch the datasets kept in one object store."""

    def __init__(self, store: ObjectStore, cache_root: Path) -> None:
        self.store = store
        self.cache_root = cache_root

    @staticmethod
    def _entry(dataset_id: str) -> str:
        return f"{CATALOG_PREFIX}/{check_dataset_id(dataset_id)}.json"

    @staticmethod
    def prefix(dataset_id: str) -> str:
        """Where a dataset's files are kept: ``datasets/{id}``."""
        return f"{DATASETS_PREFIX}/{check_dataset_id(dataset_id)}"

    # -- catalog -----------------------------------------------------------------------------------
    def get(self, dataset_id: str) -> DatasetInfo:
        """The dataset's catalog entry.

        Raises:
            DatasetNotFound: if no dataset with this id was published (or the id is malformed).
        """
        try:
            return DatasetInfo.model_validate_json(self.store.get_bytes(self._entry(dataset_id)))
        except (ObjectNotFound, ValueError):
            raise DatasetNotFound(dataset_id) from None

    def exists(self, dataset_id: str) -> bool:
        """Whether a dataset with this id is published."""
        try:
            return self.store.exists(self._entry(dataset_id))
        except ValueError:
            return False

    def list(self, owner: str | None = None) -> list[DatasetInfo]:
        """Published datasets newest first: every one, or ``owner``'s only (read through its index)."""
        if owner is None:
            keys = [key for key in self.store.list(f"{CATALOG_PREFIX}/") if key.endswith(".json")]
            infos = [DatasetInfo.model_validate_json(self.store.get_bytes(key)) for key in keys]
        else:
            infos = []
            for key in self.store.list(f"{OWNERS_PREFIX}/{owner}/"):
                try:
                    infos.append(self.get(key.rsplit("/", 1)[1]))
                except DatasetNotFound:  # a publish that failed half-way
                    continue
        return sorted(infos, key=lambda info: info.created_at, reverse=True)

    def ownerless(self) -> builtins.list[str]:
        """Ids of datasets published before owners existed (no ``owner`` in the entry), oldest first."""
        found = []
        for key in self.store.list(f"{CATALOG_PREFIX}/"):
            stored = json.loads(self.store.get_bytes(key)) if key.endswith(".json") else {"owner": None}
            if "owner" not in stored:
                found.append(DatasetInfo.model_validate(stored))
        return [info.id for info in sorted(found, key=lambda info: info.created_at)]

    def assign_owner(self, dataset_id: str, owner: str) -> DatasetInfo:
        """Give a dataset published before owners existed to ``owner``: its index entry first, then the
        catalog entry (so the owner's list never misses an entry that names them).

        Raises:
            DatasetNotFound: no such dataset.
            ValueError: the dataset already has an owner.
        """
        try:
            stored = json.loads(self.store.get_bytes(self._entry(dataset_id)))
        except (ObjectNotFound, ValueError):
            raise DatasetNotFound(dataset_id) from None
        if "owner" in stored:
            raise ValueError(f"dataset {dataset_id} already belongs to owner {stored['owner']!r}")
        info = DatasetInfo.model_validate({**stored, "owner": owner})
        self.store.put_bytes(f"{OWNERS_PREFIX}/{owner}/{dataset_id}", b"", "text/plain")
        self.store.put_bytes(self._entry(dataset_id), info.model_dump_json(indent=2).encode(), "application/json")
        return info

    def stored_bytes(self, owner: str) -> int:
        """Bytes of ``owner``'s datasets (the storage quota's measure)."""
        return sum(info.bytes for info in self.list(owner))

    # -- publishing --------------------------------------------------------------------------------
    def publish(
        self,
        folder: Path,
        *,
        name: str,
        origin: str,
        fmt: str = "manifest",
        dataset_id: str | None = None,
        job_id: str | None = None,
        parent_id: str | None = None,
        owner: str = "default",
    ) -> DatasetInfo:
        """Upload the dataset in ``folder`` and add it to the catalog (last).

        Image keys are made safe for every store (characters outside ``A-Za-z0-9._-=+@,`` become ``_``)
        and the stored manifest names them. Publishing an id that exists returns its entry unchanged,
        so a redelivered job that publishes a deterministic id does it once.

        Raises:
            ManifestError: if ``folder`` holds no manifest, or one that points outside the folder.
        """
        dataset_id = check_dataset_id(dataset_id or new_dataset_id())
        if self.exists(dataset_id):
            return self.get(dataset_id)
        manifest = Manifest.read(folder)
        prefix = self.prefix(dataset_id)
        renamed = _safe_names(manifest.records)
        sources = {renamed[r.image]: _inside(folder, r.image) for r in manifest.records}
        stored = Manifest([replace(r, image=renamed[r.image]) for r in manifest.records], folder)
        try:
            with ThreadPoolExecutor(_TRANSFER_THREADS) as pool:
                list(pool.map(lambda item: self.store.put_file(f"{prefix}/{item[0]}", item[1]), sources.items()))
            self.store.put_bytes(f"{prefix}/{MANIFEST_NAME}", stored.to_csv().encode(), "text/csv")
            if (folder / REPORT_NAME).is_file():
                self.store.put_file(f"{prefix}/{REPORT_NAME}", folder / REPORT_NAME)
            info = DatasetInfo(
                id=dataset_id,
                name=name,
                origin=origin,
                created_at=datetime.now(UTC),
                format=fmt,
                stats=dataset_stats(stored),
                job_id=job_id,
                parent_id=parent_id,
                owner=owner,
                bytes=sum(path.stat().st_size for path in sources.values()),
            )
            self.store.put_bytes(f"{OWNERS_PREFIX}/{owner}/{dataset_id}", b"", "text/plain")
            self.store.put_bytes(self._entry(dataset_id), info.model_dump_json(indent=2).encode(), "application/json")
        except BaseException:
            self._remove_files(dataset_id)
            raise
        return info

    def delete(self, dataset_id: str) -> None:
        """Remove a dataset: its catalog entry first (it vanishes at once), then its files."""
        owner = self.get(dataset_id).owner if self.exists(dataset_id) else None
        self.store.delete(self._entry(dataset_id))
        if owner is not None:
            self.store.delete(f"{OWNERS_PREFIX}/{owner}/{dataset_id}")
        self._remove_files(dataset_id)

    def _remove_files(self, dataset_id: str) -> None:
        for key in self.store.list(f"{self.prefix(dataset_id)}/"):
            self.store.delete(key)

    # -- local copies ------------------------------------------------------------------------------
    def fetch(self, dataset_id: str) -> Manifest:
        """The dataset as a local folder under ``cache_root``, downloaded once and checked by sha256.

        Raises:
            DatasetNotFound: if the dataset is not published.
            ManifestError: if a downloaded image does not match its manifest row.
        """
        info = self.get(dataset_id)
        target = self.cache_root / DATASETS_PREFIX / dataset_id
        if (target / _COMPLETE).is_file():
            return Manifest.read(target)
        staging = target.with_name(f".{dataset_id}.{uuid.uuid4().hex[:8]}")
        try:
            prefix = f"{self.prefix(dataset_id)}/"
            with ThreadPoolExecutor(_TRANSFER_THREADS) as pool:
                list(
                    pool.map(
                        lambda key: self.store.get_file(key, staging / key[len(prefix) :]), self.store.list(prefix)
                    )
                )
            manifest = Manifest.read(staging)
            for record in manifest:
                digest = hashlib.sha256(manifest.path_of(record).read_bytes()).hexdigest()
                if digest != record.sha256:
                    raise ManifestError(
                        f"dataset {dataset_id}: {record.image} does not match its sha256 in the "
                        "manifest (corrupted in the store or in transit)"
                    )
            (staging / _COMPLETE).write_text(info.model_dump_json(), encoding="utf-8")
            try:
                staging.rename(target)
            except OSError:  # another process finished the same download first
                if not (target / _COMPLETE).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Manifest.read(target)

    def push(self, folder: Path, *, name: str, dataset_id: str | None = None) -> DatasetInfo:
        """Publish a local DermaSynth dataset folder (``origin=local``)."""
        return self.publish(folder, name=name, origin="local", dataset_id=dataset_id)


def _inside(folder: Path, image: str) -> Path:
    path = Path(image)
    if path.is_absolute() or ".." in path.parts:
        raise ManifestError(
            f"{image}: a published dataset must hold its images; this row points outside "
            f"{folder} (was it imported with --reference?)"
        )
    return folder / path


def _safe_names(records: Iterable[Record]) -> dict[str, str]:
    """Map each manifest image path to a unique key-safe relative path."""
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    for record in records:
        image = record.image
        parts = [_UNSAFE_KEY_CHARS.sub("_", part) or "_" for part in PurePosixPath(image).parts]
        parts = [("_" + p) if p in (".", "..") else p for p in parts]
        candidate, n = "/".join(parts), 1
        stem, dot, suffix = candidate.rpartition(".")
        while candidate.lower() in taken or candidate in (MANIFEST_NAME, REPORT_NAME, _COMPLETE):
            candidate = f"{stem}_{n}{dot}{suffix}" if dot else f"{candidate}_{n}"
            n += 1
        taken.add(candidate.lower())
        mapping[image] = candidate
    return mapping
