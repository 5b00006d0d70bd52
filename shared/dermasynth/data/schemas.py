"""Dataset schemas: rejection reasons, import reports, per-file rejections, dataset statistics, catalog entries.

Pure pydantic (no image library): the gateway client and a client-only install import them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class DatasetFormat(StrEnum):
    """The layouts a dataset is imported from (``auto`` detects it): ``--format`` of the CLI, ``format`` of the API."""

    AUTO = "auto"
    HAM10000 = "ham10000"
    ISIC_CSV = "isic-csv"
    IMAGEFOLDER = "imagefolder"
    MANIFEST = "manifest"


class RejectReason(StrEnum):
    """Why an image was left out. The values appear in import reports and API errors."""

    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    GRAYSCALE = "grayscale"
    CMYK = "cmyk"
    UNSUPPORTED_MODE = "unsupported_mode"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_LARGE = "too_large"
    TOO_SMALL = "too_small"
    NO_LABEL = "no_label"
    UNKNOWN_LABEL = "unknown_label"
    OUTSIDE_CLASS_FOLDER = "outside_class_folder"


class Rejection(BaseModel):
    """A file left out of a dataset, and why."""

    file: str
    reason: RejectReason
    detail: str = ""


class ImportReport(BaseModel):
    """What an import saw and did. ``files_seen == accepted + rejected`` always holds."""

    source: str
    format: str
    files_seen: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    rejections: list[Rejection] = Field(default_factory=list)
    missing_files: list[str] = Field(default_factory=list, description="labelled images that are not there")
    duplicates: list[list[str]] = Field(default_factory=list, description="groups of byte-identical images")
    warnings: list[str] = Field(default_factory=list)
    classes: dict[str, int] = Field(default_factory=dict)
    splits: dict[str, dict[str, int]] = Field(default_factory=dict)
    split_seed: int | None = None


class DatasetStats(BaseModel):
    """What is in a dataset: ``dermasynth data stats`` and ``GET /v1/datasets/{id}``."""

    images: int
    lesions: int
    classes: dict[str, int]
    splits: dict[str, dict[str, int]]
    sources: dict[str, int]


class DatasetInfo(BaseModel):
    """A dataset kept in the object store under ``datasets/{id}/``: ``GET /v1/datasets/{id}``."""

    id: str
    name: str
    origin: str = Field(description="upload, store (registered from a store prefix), synthesis or local")
    created_at: datetime
    format: str = Field(description="the layout it was imported from, or 'manifest'")
    stats: DatasetStats
    job_id: str | None = Field(default=None, description="the job that made it (synthesis or ingest)")
    owner: str = Field(default="default", description="the team or project the dataset belongs to")
    bytes: int = Field(default=0, description="stored size of its files (counts against the owner's quota)")
    parent_id: str | None = Field(default=None, description="the dataset a synthesis job started from")
