"""Dataset layouts DermaSynth reads, each listed as the same :class:`Listing` of candidate files.

- ``ham10000``: ``HAM10000_metadata.csv`` (lesion_id, image_id, dx) plus one or more image folders
  anywhere below it (the official release ships ``HAM10000_images_part_1`` and ``_part_2``).
- ``isic-csv``: an ISIC 2018 Task 3 or ISIC 2019 ground-truth CSV (``image`` and one-hot class
  columns, mapped by :data:`dermasynth.labels.ISIC_CLASS_MAP`), images anywhere below it; lesion ids
  come from an ISIC metadata CSV beside it when one has a ``lesion_id`` column, else each image is its
  own lesion (the report warns that the split may then leak).
- ``imagefolder``: one subfolder per class.
- ``manifest``: a DermaSynth dataset (``manifest.csv``), read back with its splits.

A listing names every file seen, so an import report can account for all of them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dermasynth.data.manifest import MANIFEST_NAME, Manifest, Record
from dermasynth.data.schemas import DatasetFormat, RejectReason
from dermasynth.labels import ISIC_CLASS_MAP, normalize_label

Format = Literal["ham10000", "isic-csv", "imagefolder", "manifest"]
FORMATS: tuple[str, ...] = tuple(f.value for f in DatasetFormat)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
HAM_METADATA = "HAM10000_metadata.csv"


class FormatError(ValueError):
    """The source is not in the layout asked for; the message says what was expected."""


@dataclass
class Candidate:
    """One file seen in the source: what the layout says of it, or why it is out already."""

    path: Path
    label: str | None = None
    lesion_id: str | None = None
    split: str | None = None
    reject: RejectReason | None = None
    detail: str = ""
    origin: Record | None = None  # the row it came from, when re-importing a DermaSynth manifest


@dataclass
class Listing:
    """Every file seen, plus rows that name images which are not there."""

    format: Format
    candidates: list[Candidate] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keeps_splits: bool = False


def detect_format(src: Path) -> Format:
    """Guess the layout of ``src``.

    Raises:
        FormatError: if no supported layout is recognised.
    """
    if (src / MANIFEST_NAME).is_file():
        return "manifest"
    if _find(src, HAM_METADATA):
        return "ham10000"
    if _isic_ground_truth(src):
        return "isic-csv"
    if any(p.is_dir() and any(_images_below(p)) for p in src.iterdir()):
        return "imagefolder"
    raise FormatError(
        f"{src}: no supported layout found; expected {MANIFEST_NAME}, {HAM_METADATA}, an ISIC ground-truth "
        "CSV (image + one-hot class columns) or one subfolder of images per class"
    )


def list_source(src: Path, fmt: str = "auto") -> Listing:
    """List ``src`` in layout ``fmt`` (``auto`` detects it)."""
    if not src.is_dir():
        raise FormatError(f"{src} is not a folder; unpack the dataset first")
    chosen = detect_format(src) if fmt == "auto" else fmt
    readers: dict[str, Callable[[Path], Listing]] = {
        "ham10000": _list_ham10000,
        "isic-csv": _list_isic,
        "imagefolder": _list_imagefolder,
        "manifest": _list_manifest,
    }
    if chosen not in readers:
        raise FormatError(f"format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    return readers[chosen](src)


def _files_below(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _images_below(root: Path) -> list[Path]:
    return [p for p in _files_below(root) if p.suffix.lower() in IMAGE_SUFFIXES]


def _find(src: Path, name: str) -> Path | None:
    hits = sorted(src.rglob(name))
    return hits[0] if hits else None


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _by_stem(src: Path, skip: set[Path]) -> tuple[dict[str, Path], list[Path]]:
    """Map image ids (file stems) to files; return the other files seen too."""
    stems: dict[str, Path] = {}
    others: list[Path] = []
    for path in _files_below(src):
        if path in skip:
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem not in stems:
            stems[path.stem] = path
        else:
            others.append(path)
    return stems, others


def _label_rows(
    listing: Listing, stems: dict[str, Path], others: list[Path], rows: dict[str, tuple[str | None, str, str]]
) -> Listing:
    """Turn image-id -> (label or None if unmapped, raw label, lesion id) rows into candidates."""
    for image_id, path in sorted(stems.items()):
        row = rows.get(image_id)
        if row is None:
            listing.candidates.append(
                Candidate(path, reject=RejectReason.NO_LABEL, detail="no row for this image in the labels file")
            )
        elif row[0] is None:
            listing.candidates.append(
                Candidate(path, reject=RejectReason.UNKNOWN_LABEL, detail=f"class {row[1]!r} has no DermaSynth class")
            )
        else:
            listing.candidates.append(Candidate(path, label=row[0], lesion_id=row[2]))
    for path in others:
        listing.candidates.append(
            Candidate(
                path,
                reject=RejectReason.NOT_AN_IMAGE,
                detail=f"suffix {path.suffix or '(none)'} is not an image suffix ({', '.join(sorted(IMAGE_SUFFIXES))})",
            )
        )
    listing.missing = sorted(set(rows) - set(stems))
    return listing


def _list_ham10000(src: Path) -> Listing:
    meta = _find(src, HAM_METADATA)
    if meta is None:
        raise FormatError(f"{src}: {HAM_METADATA} not found (the HAM10000 layout needs it)")
    header, raw = _read_csv(meta)
    if not {"lesion_id", "image_id", "dx"} <= set(header):
        raise FormatError(f"{meta}: expected the columns lesion_id, image_id, dx; found {', '.join(header)}")
    rows: dict[str, tuple[str | None, str, str]] = {}
    for r in raw:
        try:
            label: str | None = normalize_label(r["dx"])
        except ValueError:
            label = None
        rows[r["image_id"]] = (label, r["dx"], r["lesion_id"])
    skip = {p for p in _files_below(src) if p.suffix.lower() == ".csv" or p.name in ("README.md", "SOURCE.txt")}
    stems, others = _by_stem(src, skip)
    return _label_rows(Listing("ham10000"), stems, others, rows)


def _isic_ground_truth(src: Path) -> tuple[Path, list[str], list[dict[str, str]]] | None:
    for path in sorted(src.rglob("*.csv")):
        header, rows = _read_csv(path)
        classes = [c for c in header if c in ISIC_CLASS_MAP]
        if "image" in header and len(classes) >= 2:
            return path, classes, rows
    return None


def _list_isic(src: Path) -> Listing:
    found = _isic_ground_truth(src)
    if found is None:
        raise FormatError(
            f"{src}: no ISIC ground-truth CSV found; expected a CSV with an 'image' column "
            f"and one-hot columns among {', '.join(ISIC_CLASS_MAP)}"
        )
    gt_path, classes, raw = found
    lesions: dict[str, str] = {}
    listing = Listing("isic-csv")
    for path in sorted(src.rglob("*.csv")):
        header, meta_rows = _read_csv(path)
        if path != gt_path and {"image", "lesion_id"} <= set(header):
            lesions.update({r["image"]: r["lesion_id"] for r in meta_rows if r.get("lesion_id")})
    if not lesions:
        listing.warnings.append(
            "no lesion ids found (no CSV with image and lesion_id columns): each image is "
            "treated as its own lesion, so images of one lesion may land in different splits"
        )
    rows: dict[str, tuple[str | None, str, str]] = {}
    for r in raw:
        hot = [c for c in classes if float(r.get(c) or 0) >= 0.5]
        code = hot[0] if len(hot) == 1 else "+".join(hot) or "none"
        rows[r["image"]] = (ISIC_CLASS_MAP.get(code), code, lesions.get(r["image"], r["image"]))
    stems, others = _by_stem(src, set(src.rglob("*.csv")))
    return _label_rows(listing, stems, others, rows)


def _list_imagefolder(src: Path) -> Listing:
    listing = Listing("imagefolder")
    for path in _files_below(src):
        relative = path.relative_to(src)
        if len(relative.parts) < 2:
            listing.candidates.append(
                Candidate(
                    path,
                    reject=RejectReason.OUTSIDE_CLASS_FOLDER,
                    detail="files must sit in a subfolder named after their class",
                )
            )
            continue
        try:
            label = normalize_label(relative.parts[0])
        except ValueError as exc:
            listing.candidates.append(Candidate(path, reject=RejectReason.UNKNOWN_LABEL, detail=str(exc)))
            continue
        listing.candidates.append(Candidate(path, label=label, lesion_id=f"{label}/{path.stem}"))
    if not listing.candidates:
        raise FormatError(f"{src}: no files found; the imagefolder layout is SRC/<class>/<image>")
    return listing


def _list_manifest(src: Path) -> Listing:
    manifest = Manifest.read(src)
    listing = Listing("manifest", keeps_splits=True)
    for record in manifest:
        path = manifest.path_of(record)
        if not path.is_file():
            listing.missing.append(record.image)
            continue
        listing.candidates.append(
            Candidate(path, label=record.label, lesion_id=record.lesion_id, split=record.split, origin=record)
        )
    return listing
