"""Where an experiment's real dataset comes from: a dataset folder, an import of a raw layout, or generated lesions.

A config file names its data in a ``data`` section (relative paths are read from the config file's
folder). An import or a generated dataset is made once inside the experiment folder (``data/``) and
reused when the experiment is resumed; the import references the source images where they lie.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.importer import import_dataset
from dermasynth.data.manifest import MANIFEST_NAME, Manifest
from dermasynth.data.splits import SplitFractions

logger = logging.getLogger(__name__)

SOURCE_RECORD = "experiment_source.json"


class DemoData(BaseModel):
    """Generated demo lesions (drawings, not skin) in HAM10000's class proportions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(default=280, ge=28, le=100_000)
    size: int = Field(default=32, ge=16, le=512, description="image height in pixels")
    seed: int = Field(default=0, ge=0)


class DataSource(BaseModel):
    """Exactly one of: ``dataset`` (a DermaSynth dataset folder), ``import_from`` (a raw layout), ``demo``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Path | None = Field(default=None, description="a folder holding manifest.csv")
    import_from: Path | None = Field(default=None, description="a dataset as downloaded (HAM10000, ISIC CSV, ...)")
    format: str = Field(default="auto", description="layout of import_from: auto, ham10000, isic-csv, imagefolder")
    split_seed: int = Field(default=0, ge=0, description="seeds the lesion-grouped split of an import")
    split: SplitFractions = Field(default_factory=SplitFractions, description="split shares of an import or demo")
    demo: DemoData | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        given = [name for name in ("dataset", "import_from", "demo") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"data must name exactly one of dataset, import_from or demo; got {given or 'none'}")
        return self

    def relative_to(self, folder: Path) -> DataSource:
        """This source with relative paths read from ``folder`` (a config file's folder)."""
        return self.model_copy(
            update={
                name: folder / path
                for name in ("dataset", "import_from")
                if (path := getattr(self, name)) is not None and not path.is_absolute()
            }
        )


def prepare_dataset(source: DataSource, folder: Path) -> Manifest:
    """The real dataset of an experiment, importing or generating it into ``folder`` the first time.

    Raises:
        FileExistsError: if ``folder`` holds a dataset made from another source.
        ManifestError, FormatError: if the source cannot be read.
    """
    if source.dataset is not None:
        return Manifest.read(source.dataset)
    record = source.model_dump_json(exclude={"dataset"})
    if (folder / MANIFEST_NAME).exists():
        stored = folder / SOURCE_RECORD
        if stored.exists() and json.loads(stored.read_text(encoding="utf-8")) == json.loads(record):
            return Manifest.read(folder)
        raise FileExistsError(
            f"{folder} holds a dataset made from another source than this config's data section; "
            "use another experiment folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SOURCE_RECORD).write_text(record, encoding="utf-8")
    if source.demo is not None:
        logger.info("generating %d demo lesions into %s", source.demo.count, folder)
        return make_demo_dataset(folder, source.demo.count, source.demo.size, source.demo.seed, source.split)
    assert source.import_from is not None
    logger.info("importing %s into %s (images referenced where they lie)", source.import_from, folder)
    manifest, report = import_dataset(
        source.import_from, folder, source.format, seed=source.split_seed, fractions=source.split, copy=False
    )
    logger.info("imported %d of %d files (%d rejected)", report.accepted, report.files_seen, report.rejected)
    return manifest
