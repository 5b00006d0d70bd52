"""Bringing datasets into the store: from an uploaded zip, from a prefix already in the store, or a folder.

Each path validates every file with :func:`dermasynth.data.importer.import_dataset` (which strips
image metadata on copy) in a private staging folder and then publishes the result through the
:class:`~dermasynth.data.catalog.DatasetCatalog`, whose catalog entry is written last: a failed
ingest leaves nothing in the store.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple

from dermasynth.config import Settings
from dermasynth.data.archives import ArchiveLimits, ArchiveRejected, extract_archive
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.importer import import_dataset
from dermasynth.data.manifest import MANIFEST_NAME
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.data.splits import SplitFractions
from dermasynth.storage.base import ObjectStore, check_prefix

INCOMING_PREFIX = "incoming"
"""``incoming/{owner}/...``: where an owner puts datasets to register (the only prefix register reads)."""
UPLOADS_FOLDER = "uploads"
"""``incoming/{owner}/uploads/{job_id}.zip``: an uploaded zip waiting for its ingest job (deleted by the job)."""


def upload_key(owner: str, job_id: str) -> str:
    """Where the gateway stores the zip of upload job ``job_id`` for the worker."""
    return f"{INCOMING_PREFIX}/{owner}/{UPLOADS_FOLDER}/{job_id}.zip"


def ingested_dataset_id(job_id: str) -> str:
    """The dataset id an ingest job publishes: derived from the job id, so a redelivered job publishes once."""
    return f"ds-{job_id}"


class NothingAccepted(ValueError):
    """Every file of the source was rejected; ``report`` says why, file by file."""

    def __init__(self, report: ImportReport) -> None:
        reasons = ", ".join(f"{n} {reason}" for reason, n in report.rejected_by_reason.items()) or "no files"
        super().__init__(f"no image of the {report.format} dataset was accepted ({reasons}); see the report")
        self.report = report


@dataclass(frozen=True)
class IngestOptions:
    """How to read the source and split it."""

    fmt: str = "auto"
    seed: int = 0
    fractions: SplitFractions | None = None
    max_pixels: int = 50_000_000
    owner: str = "default"
    limits: ArchiveLimits = field(default_factory=lambda: ArchiveLimits(50_000, 4 * 1024**3, 100))


def ingest_folder(
    registry: DatasetCatalog,
    src: Path,
    *,
    name: str,
    origin: str,
    options: IngestOptions,
    trusted: bool = False,
    dataset_id: str | None = None,
    job_id: str | None = None,
) -> tuple[DatasetInfo, ImportReport]:
    """Validate ``src`` (any supported layout) and publish the accepted images as a new dataset.

    Args:
        registry: where the dataset is published.
        src: the dataset folder.
        name: a human name for the dataset.
        origin: ``upload``, ``store`` or ``local``.
        options: layout, split seed and fractions, pixel limit.
        trusted: False for anything a user sent: a DermaSynth manifest inside it may then only name
            files inside ``src``.
        dataset_id: the new dataset's id (an ingest job's, from its job id); None: a fresh one.
        job_id: the ingest job that imports it, recorded on the dataset.

    Raises:
        ArchiveRejected: an untrusted manifest names files outside ``src``.
        FormatError: ``src`` is not in the layout asked for.
        ManifestError: a DermaSynth manifest in ``src`` breaks a manifest rule.
        NothingAccepted: every file was rejected (the report says why).
    """
    if not trusted:
        _check_manifest_paths(src)
    with tempfile.TemporaryDirectory(prefix="dermasynth-ingest-") as work:
        out = Path(work) / "dataset"
        _, report = import_dataset(
            src, out, options.fmt, seed=options.seed, fractions=options.fractions, max_pixels=options.max_pixels
        )
        if report.accepted == 0:
            raise NothingAccepted(report)
        info = registry.publish(
            out, name=name, origin=origin, fmt=report.format, owner=options.owner, dataset_id=dataset_id, job_id=job_id
        )
    return info, report


def ingest_archive(
    registry: DatasetCatalog,
    archive: Path | IO[bytes],
    *,
    name: str,
    options: IngestOptions,
    dataset_id: str | None = None,
    job_id: str | None = None,
) -> tuple[DatasetInfo, ImportReport]:
    """Unpack an uploaded zip (a path or a seekable binary file) under the archive limits, then
    :func:`ingest_folder` it.

    Raises:
        ArchiveRejected: not a zip, unsafe paths, a zip bomb, too many files.
        And whatever :func:`ingest_folder` raises.
    """
    with tempfile.TemporaryDirectory(prefix="dermasynth-upload-") as work:
        root = extract_archive(archive, Path(work), options.limits)
        return ingest_folder(
            registry, root, name=name, origin="upload", options=options, dataset_id=dataset_id, job_id=job_id
        )


class StorePrefix(NamedTuple):
    """A checked prefix of the object store: its normalised name, its keys and their bytes in all."""

    prefix: str
    keys: list[str]
    nbytes: int


def check_store_prefix(store: ObjectStore, prefix: str, owner: str, limits: ArchiveLimits) -> StorePrefix:
    """The normalised ``prefix``, its keys and their total size, if it lies under ``incoming/{owner}/`` and its
    objects are within the upload limits; only the store's listing and sizes are read, nothing is downloaded.

    Raises:
        ArchiveRejected: another prefix than the owner's own, nothing under it, too many objects or bytes.
        InvalidKey: a prefix that is not a safe store path.
    """
    prefix = check_prefix(prefix.strip("/") + "/")
    allowed = f"{INCOMING_PREFIX}/{owner}/"
    if not prefix.startswith(allowed) or prefix == allowed:
        raise ArchiveRejected(
            "forbidden_prefix",
            f"{prefix!r} is not under {allowed!r}: datasets are registered only from a folder of the owner's "
            f"own '{allowed}' prefix (never predictions/, models/, runs/, catalog/ or datasets/)",
        )
    if prefix.startswith(f"{allowed}{UPLOADS_FOLDER}/"):
        raise ArchiveRejected(
            "forbidden_prefix",
            f"{prefix!r} holds uploads waiting for their ingest job; register a folder of your own under {allowed!r}",
        )
    keys = store.list(prefix)
    if not keys:
        raise ArchiveRejected("empty_prefix", f"nothing is stored under {prefix!r}")
    if len(keys) > limits.max_files:
        raise ArchiveRejected(
            "too_many_files",
            f"{prefix!r} holds {len(keys)} objects, more than the "
            f"{limits.max_files} accepted (DERMASYNTH_MAX_UPLOAD_FILES)",
        )
    total = 0
    for key in keys:  # sizes first: nothing is downloaded from a prefix over the limit
        total += store.size(key)
        if total > limits.max_expanded_bytes:
            raise ArchiveRejected(
                "too_large",
                f"{prefix!r} holds more than the {limits.max_expanded_bytes} bytes accepted "
                "(DERMASYNTH_MAX_UPLOAD_EXPANDED_BYTES)",
            )
    return StorePrefix(prefix, keys, total)


def ingest_store_prefix(
    registry: DatasetCatalog,
    store: ObjectStore,
    checked: StorePrefix,
    *,
    name: str,
    options: IngestOptions,
    dataset_id: str | None = None,
    job_id: str | None = None,
) -> tuple[DatasetInfo, ImportReport]:
    """Register a dataset that already lies in the store under a prefix (any supported layout), once
    :func:`check_store_prefix` has listed and checked it.

    Raises:
        Whatever :func:`ingest_folder` raises.
    """
    prefix, keys, _ = checked
    with tempfile.TemporaryDirectory(prefix="dermasynth-register-") as work:
        for key in keys:
            store.get_file(key, Path(work).joinpath(*PurePosixPath(key[len(prefix) :]).parts))
        return ingest_folder(
            registry, Path(work), name=name, origin="store", options=options, dataset_id=dataset_id, job_id=job_id
        )


def ingest_options(
    settings: Settings, *, fmt: str, seed: int, val_frac: float, test_frac: float, owner: str
) -> IngestOptions:
    """The options of an import from the deployment's settings (pixel and archive limits) and a request.

    Raises:
        pydantic.ValidationError: fractions that leave no training share.
    """
    return IngestOptions(
        fmt=fmt,
        seed=seed,
        fractions=SplitFractions(train=1 - val_frac - test_frac, val=val_frac, test=test_frac),
        max_pixels=settings.max_image_pixels,
        owner=owner,
        limits=ArchiveLimits(settings.max_upload_files, settings.max_upload_expanded_bytes, settings.max_upload_ratio),
    )


def _check_manifest_paths(src: Path) -> None:
    """Refuse a DermaSynth manifest that names files outside ``src`` (absolute paths or '..')."""
    manifest = src / MANIFEST_NAME
    if not manifest.is_file():
        return
    with manifest.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            image = (row.get("image") or "").replace("\\", "/")
            path = PurePosixPath(image)
            if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
                raise ArchiveRejected(
                    "unsafe_path",
                    f"{MANIFEST_NAME} line {line}: image {image!r} points outside "
                    "the dataset; manifest paths must be relative to the dataset folder",
                )
