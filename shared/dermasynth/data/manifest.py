"""The DermaSynth manifest: one CSV row per image, the contract every command reads.

Columns: ``image`` (path relative to the dataset folder, or absolute), ``label``, ``lesion_id``,
``split`` (train/val/test), ``source`` (real/generated/synthetic), ``sha256`` of the stored bytes,
``split_seed`` (the seed that drew the split), and for synthetic images their provenance:
``generator`` (checkpoint id), ``seed`` and ``truncation``, and ``filter_confidence`` (the probability a
real-trained classifier gave the intended class, for images kept by a filtered synthesis).

Synthetic images may only be in ``train``; a lesion may only be in one split. Both are enforced
when a manifest is built or read, so an evaluation can never see a GAN image.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from dermasynth.labels import class_names_of, normalize_label

Split = Literal["train", "val", "test"]
Source = Literal["real", "generated", "synthetic"]
SPLITS: tuple[str, ...] = get_args(Split)
SOURCES: tuple[str, ...] = get_args(Source)
MANIFEST_NAME = "manifest.csv"
COLUMNS = (
    "image",
    "label",
    "lesion_id",
    "split",
    "source",
    "sha256",
    "split_seed",
    "generator",
    "seed",
    "truncation",
    "filter_confidence",
)


class ManifestError(ValueError):
    """A manifest breaks one of its rules; the message names the row and the rule."""


@dataclass(frozen=True)
class Record:
    """One image of a dataset."""

    image: str
    label: str
    lesion_id: str
    split: Split
    source: Source
    sha256: str
    split_seed: int | None = None
    generator: str | None = None
    seed: int | None = None
    truncation: float | None = None
    filter_confidence: float | None = None

    def __post_init__(self) -> None:
        if not self.image:
            raise ManifestError("a manifest row has an empty image path")
        object.__setattr__(self, "label", normalize_label(self.label))
        if self.split not in SPLITS:
            raise ManifestError(f"{self.image}: split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.source not in SOURCES:
            raise ManifestError(f"{self.image}: source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.source == "synthetic" and self.split != "train":
            raise ManifestError(f"{self.image}: synthetic images may only be in the train split, not {self.split!r}")
        if not self.lesion_id:
            raise ManifestError(f"{self.image}: lesion_id is empty")
        if len(self.sha256) != 64:
            raise ManifestError(f"{self.image}: sha256 must be 64 hex characters, got {self.sha256!r}")


@dataclass
class Manifest:
    """The rows of one dataset and the folder their relative paths start from."""

    records: list[Record]
    root: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        self.check()

    # -- rules -------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`ManifestError` on duplicate images or a lesion that spans splits."""
        seen: set[str] = set()
        lesion_split: dict[str, str] = {}
        for record in self.records:
            if record.image in seen:
                raise ManifestError(f"{record.image}: listed twice in the manifest")
            seen.add(record.image)
            if record.source == "synthetic":
                continue
            first = lesion_split.setdefault(record.lesion_id, record.split)
            if first != record.split:
                raise ManifestError(
                    f"lesion {record.lesion_id} is in both {first!r} and {record.split!r}: "
                    "splits must be grouped by lesion_id"
                )

    # -- views -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def classes(self) -> list[str]:
        """Class names in index order (sorted)."""
        return class_names_of(r.label for r in self.records)

    def in_split(self, split: str) -> list[Record]:
        if split not in SPLITS:
            raise ManifestError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        return [r for r in self.records if r.split == split]

    def path_of(self, record: Record) -> Path:
        path = Path(record.image)
        return path if path.is_absolute() else self.root / path

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        rows = self.records if split is None else self.in_split(split)
        counts = Counter(r.label for r in rows)
        return {label: counts[label] for label in sorted(counts)}

    def split_counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for r in self.records:
            table[r.split][r.label] += 1
        return {s: dict(sorted(table[s].items())) for s in SPLITS if s in table}

    def with_records(self, extra: Iterable[Record]) -> Manifest:
        """A new manifest holding these rows and ``extra`` (all rules checked again)."""
        return Manifest([*self.records, *extra], self.root)

    # -- files -------------------------------------------------------------------------------------
    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in self.records:
            writer.writerow({name: "" if getattr(r, name) is None else getattr(r, name) for name in COLUMNS})
        return buffer.getvalue()

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.csv`` atomically and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / MANIFEST_NAME
        tmp = target.with_suffix(".csv.tmp")
        tmp.write_text(self.to_csv(), encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def from_csv(cls, text: str, root: Path) -> Manifest:
        reader = csv.DictReader(io.StringIO(text))
        missing = {"image", "label", "lesion_id", "split", "source", "sha256"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(
                f"manifest lacks the column(s) {', '.join(sorted(missing))}; expected {', '.join(COLUMNS)}"
            )
        records = []
        for line, row in enumerate(reader, start=2):
            try:
                records.append(
                    Record(
                        image=row["image"],
                        label=row["label"],
                        lesion_id=row["lesion_id"],
                        split=row["split"],  # type: ignore[arg-type]
                        source=row["source"],  # type: ignore[arg-type]
                        sha256=row["sha256"],
                        split_seed=_opt(row.get("split_seed"), int),
                        generator=row.get("generator") or None,
                        seed=_opt(row.get("seed"), int),
                        truncation=_opt(row.get("truncation"), float),
                        filter_confidence=_opt(row.get("filter_confidence"), float),
                    )
                )
            except (ValueError, TypeError) as exc:
                raise ManifestError(f"manifest line {line}: {exc}") from exc
        return cls(records, root)

    @classmethod
    def read(cls, location: Path) -> Manifest:
        """Read a manifest from a dataset folder or from the CSV file itself."""
        path = location / MANIFEST_NAME if location.is_dir() else location
        if not path.is_file():
            raise ManifestError(
                f"no manifest at {path}: expected a DermaSynth dataset folder "
                f"holding {MANIFEST_NAME} (make one with `dermasynth data import`)"
            )
        return cls.from_csv(path.read_text(encoding="utf-8"), path.parent)


def _opt(value: str | None, kind: type[int] | type[float]) -> Any:
    return None if value in (None, "") else kind(value)
