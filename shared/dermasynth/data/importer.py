"""Turn a dataset in any supported layout into a validated, split DermaSynth dataset."""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from dermasynth.data.formats import Candidate, list_source
from dermasynth.data.images import inspect_image, strip_metadata
from dermasynth.data.manifest import MANIFEST_NAME, Manifest, Record
from dermasynth.data.schemas import ImportReport, Rejection, RejectReason
from dermasynth.data.splits import SplitFractions, assign_splits

REPORT_NAME = "import_report.json"


@dataclass(frozen=True)
class _Checked:
    candidate: Candidate
    reject: RejectReason | None
    detail: str
    stored: str = ""
    sha256: str = ""


def import_dataset(
    src: Path,
    out: Path,
    fmt: str = "auto",
    *,
    seed: int = 0,
    fractions: SplitFractions | None = None,
    resplit: bool = False,
    copy: bool = True,
    max_pixels: int = 50_000_000,
    on_file: Callable[[], None] | None = None,
) -> tuple[Manifest, ImportReport]:
    """Validate every file of ``src`` and write ``manifest.csv`` and ``import_report.json`` to ``out``.

    Args:
        src: the source folder.
        out: the new dataset folder (must not hold a manifest yet).
        fmt: ``auto``, ``ham10000``, ``isic-csv``, ``imagefolder`` or ``manifest``.
        seed: seeds the lesion-grouped split.
        fractions: split shares (70/15/15 by default).
        resplit: draw new splits even when the source has them (manifest format).
        copy: copy accepted images into ``out/images`` with their metadata stripped; when False the
            manifest references the source files by absolute path.
        max_pixels: decompression-bomb guard.
        on_file: called once per file checked (progress bars).

    Returns:
        The manifest written and the report, whose counts add up to the files seen.

    Raises:
        FileExistsError: if ``out`` already holds a manifest.
        FormatError: if ``src`` is not in the layout asked for.
    """
    if (out / MANIFEST_NAME).exists():
        raise FileExistsError(f"{out} already holds a dataset ({MANIFEST_NAME}); choose another --out")
    listing = list_source(src, fmt)

    taken: set[str] = set()
    targets = {
        id(c): _unique_name(f"images/{c.label}/{c.path.stem}", taken) for c in listing.candidates if c.reject is None
    }

    def check(candidate: Candidate) -> _Checked:
        """Decode one file and, when accepted, store it; runs in a thread pool (PIL releases the GIL)."""
        try:
            if candidate.reject is not None:
                return _Checked(candidate, candidate.reject, candidate.detail)
            data = candidate.path.read_bytes()
            result = inspect_image(data, max_pixels)
            if not result.ok:
                return _Checked(candidate, result.reason, result.detail)
            if not copy:
                return _Checked(candidate, None, "", str(candidate.path.resolve()), hashlib.sha256(data).hexdigest())
            clean, suffix = strip_metadata(data)
            target = out / (targets[id(candidate)] + suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(clean)
            return _Checked(candidate, None, "", str(target.relative_to(out)), hashlib.sha256(clean).hexdigest())
        except OSError as exc:
            return _Checked(candidate, RejectReason.UNREADABLE, f"cannot read the file: {exc}")
        finally:
            if on_file:
                on_file()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        checked = list(pool.map(check, listing.candidates))

    accepted = [item for item in checked if item.reject is None]
    rejections = [
        Rejection(file=str(item.candidate.path.relative_to(src)), reason=item.reject, detail=item.detail)
        for item in checked
        if item.reject is not None
    ]
    by_hash: dict[str, list[str]] = defaultdict(list)
    for item in accepted:
        by_hash[item.sha256].append(str(item.candidate.path.relative_to(src)))

    keep = listing.keeps_splits and not resplit
    splits = (
        [item.candidate.split or "" for item in accepted]
        if keep
        else assign_splits(
            [item.candidate.label or "" for item in accepted],
            [item.candidate.lesion_id or "" for item in accepted],
            fractions,
            seed,
        )
    )
    records = [_record(item, split, None if keep else seed) for item, split in zip(accepted, splits, strict=True)]
    manifest = Manifest(records, out)
    manifest.write(out)

    report = ImportReport(
        source=str(src),
        format=listing.format,
        files_seen=len(checked),
        accepted=len(records),
        rejected=len(rejections),
        rejected_by_reason=dict(Counter(r.reason.value for r in rejections)),
        rejections=rejections,
        missing_files=listing.missing,
        duplicates=[sorted(files) for files in by_hash.values() if len(files) > 1],
        warnings=listing.warnings,
        classes=manifest.class_counts(),
        splits=manifest.split_counts(),
        split_seed=None if keep else seed,
    )
    (out / REPORT_NAME).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return manifest, report


def _unique_name(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem_N`` when two sources share a name (the suffix is added on writing)."""
    name, n = stem, 1
    while name.lower() in taken:
        name, n = f"{stem}_{n}", n + 1
    taken.add(name.lower())
    return name


def _record(item: _Checked, split: str, seed: int | None) -> Record:
    c = item.candidate
    if c.origin is not None:
        return replace(
            c.origin,
            image=item.stored,
            sha256=item.sha256,
            split=split,  # type: ignore[arg-type]
            split_seed=c.origin.split_seed if seed is None else seed,
        )
    return Record(
        image=item.stored,
        label=c.label or "",
        lesion_id=c.lesion_id or "",
        split=split,  # type: ignore[arg-type]
        source="real",
        sha256=item.sha256,
        split_seed=seed,
    )
