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
from typing import IO

from dermasynth.data.archives import ArchiveLimits, ArchiveRejected, extract_archive
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.importer import import_dataset
from dermasynth.data.manifest import MANIFEST_NAME
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.data.splits import SplitFractions
from dermasynth.storage.base import ObjectStore, check_prefix

INCOMING_PREFIX = "incoming"
"""``incoming/{owner}/...``: where an owner puts datasets to register (the only prefix register reads)."""


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
    registry: DatasetCatalog, src: Path, *, name: str, origin: str, options: IngestOptions, trusted: bool = False
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
        info = registry.publish(out, name=name, origin=origin, fmt=report.format, owner=options.owner)
    return info, report


def ingest_archive(
    registry: DatasetCatalog, archive: Path | IO[bytes], *, name: str, options: IngestOptions
) -> tuple[DatasetInfo, ImportReport]:
    """Unpack an uploaded zip (a path or a seekable binary file) under the archive limits, then
    :func:`ingest_folder` it.

    Raises:
        ArchiveRejected: not a zip, unsafe paths, a zip bomb, too many files.
        And whatever :func:`ingest_folder` raises.
    """
    with tempfile.TemporaryDirectory(prefix="dermasynth-upload-") as work:
        root = extract_archive(archive, Path(work), options.limits)
        return ingest_folder(registry, root, name=name, origin="upload", options=options)


def ingest_store_prefix(
    registry: DatasetCatalog, store: ObjectStore, prefix: str, *, name: str, options: IngestOptions
) -> tuple[DatasetInfo, ImportReport]:
    """Register a dataset that already lies in the store under ``prefix`` (any supported layout).

    Raises:
        ArchiveRejected: nothing under the prefix, or more files or bytes than the upload limits.
        And whatever :func:`ingest_folder` raises.
    """
    prefix = check_prefix(prefix.strip("/") + "/")
    allowed = f"{INCOMING_PREFIX}/{options.owner}/"
    if not prefix.startswith(allowed) or prefix == allowed:
        raise ArchiveRejected(
            "forbidden_prefix",
            f"{prefix!r} is not under {allowed!r}: datasets are registered only from a folder of the owner's "
            f"own '{allowed}' prefix (never predictions/, models/, runs/, catalog/ or datasets/)",
        )
    keys = store.list(prefix)
    if not keys:
        raise ArchiveRejected("empty_prefix", f"nothing is stored under {prefix!r}")
    if len(keys) > options.limits.max_files:
        raise ArchiveRejected(
            "too_many_files",
            f"{prefix!r} holds {len(keys)} objects, more than the "
            f"{options.limits.max_files} accepted (DERMASYNTH_MAX_UPLOAD_FILES)",
        )
    total = 0
    for key in keys:  # sizes first: nothing is downloaded from a prefix over the limit
        total += store.size(key)
        if total > options.limits.max_expanded_bytes:
            raise ArchiveRejected(
                "too_large",
                f"{prefix!r} holds more than the {options.limits.max_expanded_bytes} bytes accepted "
                "(DERMASYNTH_MAX_UPLOAD_EXPANDED_BYTES)",
            )
    with tempfile.TemporaryDirectory(prefix="dermasynth-register-") as work:
        for key in keys:
            store.get_file(key, Path(work).joinpath(*PurePosixPath(key[len(prefix) :]).parts))
        return ingest_folder(registry, Path(work), name=name, origin="store", options=options)


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
