"""Synthesis: how many images each class needs, making them, and a new dataset that records their provenance.

:func:`plan_counts` reads the train split and a :class:`SynthesisPlan` (``balance`` to the largest
class times a ratio, ``at_least`` K per class, ``real_ratio``: a number of new images per class that is a
ratio of its real images, or explicit ``counts``); :func:`synthesize` samples the trained EMA generator
and writes a new dataset folder holding the source's rows (images hard-linked, splits kept) plus one
``source=synthetic``, ``split=train`` row per generated image with the generator's checkpoint id, the
image's seed and the truncation, so that each image can be made again.

With ``min_confidence`` in the plan and a real-trained classifier run (``filter_run``), candidates are
drawn until each class has its images and only those the classifier assigns to their class with at
least that probability, and that are no near-copy of a real image, are kept
(:mod:`dermasynth.gan.filtering`); their rows record ``filter_confidence``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.data.manifest import MANIFEST_NAME, Manifest, Record
from dermasynth.gan.artifacts import TrainedGenerator, load_generator
from dermasynth.gan.filtering import ClassFilterResult, FilterReport, ImageFilter
from dermasynth.gan.sampling import generate, image_seed, png_bytes
from dermasynth.labels import normalize_label
from dermasynth.progress import Progress, ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore

logger = logging.getLogger(__name__)

SYNTHESIS_RECORD = "synthesis.json"
SYNTHETIC_FOLDER = "synthetic"


class SynthesisPlan(BaseModel):
    """How many synthetic images to add per class, and how to sample them.

    * ``balance``: every class up to ``round(largest class * ratio)`` training images.
    * ``at_least``: every class up to ``at_least`` training images.
    * ``real_ratio``: ``round(real images of the class x ratio)`` new images of each class (of ``classes``):
      the synthetic-to-real ratio per class.
    * ``counts``: exactly ``counts[class]`` new images of each class named.

    ``min_confidence`` asks for filtered synthesis (see :mod:`dermasynth.gan.filtering`).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["balance", "at_least", "real_ratio", "counts"] = "balance"
    ratio: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="balance: target = largest class x ratio; real_ratio: new images = real images x ratio",
    )
    at_least: int | None = Field(default=None, ge=0, description="at_least: images per class to reach")
    counts: dict[str, int] | None = Field(default=None, description="counts: new images per class")
    truncation: float = Field(default=1.0, ge=0, le=1, description="1: full variety; lower: more typical images")
    seed: int = Field(default=0, ge=0, description="seeds every image (with its class and index)")
    classes: list[str] | None = Field(
        default=None, description="only these classes get images (balance/at_least/real_ratio)"
    )
    min_confidence: float | None = Field(
        default=None, ge=0, le=1, description="keep only images a real-trained classifier gives p(class) >= this"
    )
    max_candidates: float = Field(
        default=10.0, ge=1, le=1000, description="filtered: candidates tried per needed image, at most"
    )

    @field_validator("counts")
    @classmethod
    def _valid_counts(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        negative = {k: v for k, v in value.items() if v < 0}
        if negative:
            raise ValueError(f"counts must not be negative, got {negative}")
        return {normalize_label(k): v for k, v in value.items()}

    @field_validator("classes")
    @classmethod
    def _valid_classes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted({normalize_label(v) for v in value})

    @model_validator(mode="after")
    def _mode_has_its_target(self) -> SynthesisPlan:
        if self.mode == "at_least" and self.at_least is None:
            raise ValueError("mode 'at_least' needs at_least (images per class to reach)")
        if self.mode == "counts" and self.counts is None:
            raise ValueError("mode 'counts' needs counts (new images per class)")
        return self


class SynthesisRecord(BaseModel):
    """``synthesis.json`` in a synthesized dataset: what made it (and what makes a rerun a no-op)."""

    plan: SynthesisPlan
    counts: dict[str, int]
    generator_id: str
    gan_step: int
    source_manifest_sha256: str
    source_root: str
    images_written: int
    seconds: float
    filter_classifier: str | None = Field(default=None, description="the filter classifier (filtered synthesis)")
    filter: FilterReport | None = None


def plan_counts(manifest: Manifest, plan: SynthesisPlan) -> dict[str, int]:
    """Images to generate per class so the train split meets the plan.

    Counts include every train row (real, generated and synthetic already there); every class of the
    train split appears in the result, with 0 where nothing is needed.

    Raises:
        ValueError: if the plan names a class the train split does not hold, or the split is empty.
    """
    real = Counter(r.label for r in manifest.in_split("train") if r.source != "synthetic")
    return counts_for(manifest.class_counts("train"), plan, real=dict(real))


def counts_for(have: dict[str, int], plan: SynthesisPlan, real: dict[str, int] | None = None) -> dict[str, int]:
    """:func:`plan_counts` from the train split's class counts alone (what a dataset's stats hold).

    ``real`` counts only the real train images (``real_ratio`` plans scale them); without it the train
    counts stand in, an upper bound (what a limit check needs).

    Raises:
        ValueError: if the plan names a class ``have`` does not hold, or ``have`` is empty.
    """
    if not have:
        raise ValueError("the manifest's train split is empty: nothing to balance")
    named = set(plan.classes or []) | set(plan.counts or {})
    unknown = sorted(named - have.keys())
    if unknown:
        raise ValueError(f"classes {unknown} are not in the train split; it holds {', '.join(have)}")
    chosen = set(plan.classes or have)
    if plan.mode == "counts":
        assert plan.counts is not None
        return {label: plan.counts.get(label, 0) for label in have}
    if plan.mode == "real_ratio":
        real = real if real is not None else have
        return {label: math.floor(real.get(label, 0) * plan.ratio + 0.5) if label in chosen else 0 for label in have}
    if plan.mode == "balance":
        target = math.floor(max(have.values()) * plan.ratio + 0.5)
    else:
        assert plan.at_least is not None
        target = plan.at_least
    return {label: max(0, target - n) if label in chosen else 0 for label, n in have.items()}


def synthesize(
    gan: ObjectStore,
    manifest: Manifest,
    plan: SynthesisPlan,
    out_dir: Path,
    progress: ProgressCallback = ignore_progress,
    *,
    batch_size: int = 64,
    device: str | None = None,
    filter_run: ObjectStore | None = None,
    filter_name: str | None = None,
) -> Manifest:
    """Write a new dataset: the source's rows plus the synthetic images the plan asks for.

    Running it again with the same generator, source, plan and filter returns the dataset already written.

    Args:
        gan: the GAN run's store (its ``generator.pth`` is sampled).
        manifest: the source dataset.
        plan: how many images per class, truncation and seed.
        out_dir: the new dataset folder (must not be the source's).
        progress: called after each batch of images; may raise ``Cancelled`` (rerun to finish).
        batch_size: images generated at once.
        device: where to run the generator (default: CUDA when available).
        filter_run: with ``plan.min_confidence``: the store of a classifier run trained on the real images
            (its best checkpoint scores the candidates).
        filter_name: names that classifier in ``synthesis.json`` (default: its model and epoch).

    Returns:
        The new dataset's manifest (also written to ``out_dir/manifest.csv``).

    Raises:
        FileExistsError: if ``out_dir`` already holds a different dataset.
        ValueError: if the plan needs classes the GAN was not trained on, or a filter without its classifier
            (or a classifier without ``min_confidence``).
    """
    out_dir = out_dir.resolve()
    if out_dir == manifest.root.resolve():
        raise ValueError(f"out_dir {out_dir} is the source dataset's folder; write the new dataset elsewhere")
    if (plan.min_confidence is None) != (filter_run is None):
        raise ValueError(
            "filtered synthesis needs both min_confidence in the plan and a filter classifier run "
            "(--filter-run RUN_DIR --min-confidence P); got only one of them"
        )
    trained = load_generator(gan, device)
    counts = plan_counts(manifest, plan)
    source_sha = hashlib.sha256(manifest.to_csv().encode()).hexdigest()
    classifier = None if filter_run is None else load_trained(filter_run, "best", trained.device)
    filter_id = None if classifier is None else (filter_name or f"{classifier.config.model} epoch {classifier.epoch}")
    done = _existing(out_dir, plan, trained.generator_id, source_sha, filter_id)
    if done is not None:
        logger.info("%s already holds this synthesis; nothing to do", out_dir)
        return done
    untrained = sorted(label for label, n in counts.items() if n > 0 and label not in trained.classes)
    if untrained:
        raise ValueError(
            f"the plan needs images of {untrained}, which this GAN was not trained on (it knows "
            f"{', '.join(trained.classes)}); restrict the plan with classes="
        )

    start = time.perf_counter()
    image_filter = None
    if classifier is not None:
        assert plan.min_confidence is not None and filter_id is not None
        image_filter = ImageFilter(
            classifier,
            manifest,
            trained.config.image_size,
            plan.min_confidence,
            [label for label, n in counts.items() if n > 0],
            filter_id,
            crop=trained.config.crop,
            seed=plan.seed,
        )
    real_rows = [_link(manifest, record, out_dir) for record in manifest.records]
    synthetic, kept = _generate(trained, manifest, counts, plan, out_dir, progress, batch_size, image_filter)
    report = None
    if image_filter is not None and classifier is not None:
        report = FilterReport(
            classifier=image_filter.description,
            classifier_epoch=classifier.epoch,
            min_confidence=image_filter.min_confidence,
            max_candidates=plan.max_candidates,
            near_copy_threshold=image_filter.near_copy_threshold,
            near_copy_ratio=image_filter.near_copy_ratio,
            classes=kept,
        )
        if report.shortfall:
            logger.warning("the filter kept fewer images than asked for: %s short", report.shortfall)
    result = Manifest([*real_rows, *synthetic], out_dir)
    record = SynthesisRecord(
        plan=plan,
        counts=counts,
        generator_id=trained.generator_id,
        gan_step=trained.step,
        source_manifest_sha256=source_sha,
        source_root=str(manifest.root),
        images_written=len(synthetic),
        seconds=round(time.perf_counter() - start, 2),
        filter_classifier=filter_id,
        filter=report,
    )
    (out_dir / SYNTHESIS_RECORD).write_text(record.model_dump_json(indent=2), encoding="utf-8")
    result.write(out_dir)  # last: a dataset folder with a manifest is complete
    return result


def read_synthesis_record(folder: Path) -> SynthesisRecord | None:
    """``synthesis.json`` of a synthesized dataset folder (None if it has none)."""
    path = folder / SYNTHESIS_RECORD
    if not path.exists():
        return None
    return SynthesisRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))


def _existing(
    out_dir: Path, plan: SynthesisPlan, generator: str, source_sha: str, filter_id: str | None
) -> Manifest | None:
    """The dataset in ``out_dir`` if it is this very synthesis; raises if it is another dataset."""
    if not (out_dir / MANIFEST_NAME).exists():
        return None
    record = read_synthesis_record(out_dir)
    if record is not None:
        same = (record.plan, record.generator_id, record.source_manifest_sha256, record.filter_classifier)
        if same == (plan, generator, source_sha, filter_id):
            return Manifest.read(out_dir)
    raise FileExistsError(f"{out_dir} already holds another dataset ({MANIFEST_NAME}); choose another output folder")


def _link(manifest: Manifest, record: Record, out_dir: Path) -> Record:
    """Make a source row's image available in ``out_dir`` (hard link, else copy); absolute paths stay."""
    if Path(record.image).is_absolute():
        return record
    source, target = manifest.path_of(record), out_dir / record.image
    if target.exists():
        return record
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return record


def _generate(
    trained: TrainedGenerator,
    manifest: Manifest,
    counts: dict[str, int],
    plan: SynthesisPlan,
    out_dir: Path,
    progress: ProgressCallback,
    batch_size: int,
    image_filter: ImageFilter | None = None,
) -> tuple[list[Record], dict[str, ClassFilterResult]]:
    """Generate (and, with a filter, judge) images class by class; the rows kept and the filter's tally."""
    already = Counter(
        r.label for r in manifest.records if r.source == "synthetic" and r.generator == trained.generator_id
    )
    factor = 1.0 if image_filter is None else plan.max_candidates
    limit = {label: math.ceil(need * factor) for label, need in counts.items()}
    total, made = sum(counts.values()), 0
    records: list[Record] = []
    tally: dict[str, ClassFilterResult] = {}
    start = time.perf_counter()
    short = trained.generator_id[:12]
    for label, need in counts.items():
        if need == 0:
            continue
        first = already[label]  # continue the index where an earlier synthesis by this generator stopped
        kept: list[Record] = []
        confidences: list[float] = []
        tried = rejected_confidence = rejected_copy = 0
        while len(kept) < need and tried < limit[label]:
            size = min(batch_size, limit[label] - tried) if image_filter else min(batch_size, need - len(kept))
            seeds = [image_seed(plan.seed, label, first + tried + i) for i in range(size)]
            (images,) = generate(
                trained.generator,
                [trained.class_index(label)] * size,
                seeds,
                truncation=plan.truncation,
                batch_size=size,
            )
            verdicts = None if image_filter is None else image_filter.judge(images, label)
            for i, (seed, image) in enumerate(zip(seeds, images, strict=True)):
                if len(kept) == need:  # the rest of the batch is not examined (nor counted as candidates)
                    break
                tried += 1
                confidence = None
                if verdicts is not None:
                    confidence = float(verdicts.confidence[i])
                    if not bool(verdicts.confident[i]):
                        rejected_confidence += 1
                        continue
                    if bool(verdicts.near_copy[i]):
                        rejected_copy += 1
                        continue
                    confidences.append(confidence)
                kept.append(_write(out_dir, label, short, seed, image, trained.generator_id, plan, confidence))
            made = len(records) + len(kept)
            rate = made / max(time.perf_counter() - start, 1e-9)
            progress(
                Progress(
                    phase="synthesize",
                    step=made,
                    total_steps=total,
                    images_per_s=rate,
                    eta_s=(total - made) / rate if rate > 0 else None,
                    message=label,
                )
            )
        records.extend(kept)
        if image_filter is not None:
            tally[label] = ClassFilterResult(
                needed=need,
                candidates=tried,
                kept=len(kept),
                rejected_confidence=rejected_confidence,
                rejected_near_copy=rejected_copy,
                kept_fraction=len(confidences) / tried if tried else None,
                mean_kept_confidence=sum(confidences) / len(confidences) if confidences else None,
            )
    return records, tally


def _write(
    out_dir: Path,
    label: str,
    short: str,
    seed: int,
    image: torch.Tensor,
    generator_id: str,
    plan: SynthesisPlan,
    confidence: float | None,
) -> Record:
    """Write one generated image atomically and return its manifest row."""
    name = f"{SYNTHETIC_FOLDER}/{label}/{short}_{seed}.png"
    data = png_bytes(image)
    path = out_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return Record(
        image=name,
        label=label,
        lesion_id=f"SYN_{short}_{seed}",
        split="train",
        source="synthetic",
        sha256=hashlib.sha256(data).hexdigest(),
        generator=generator_id,
        seed=seed,
        truncation=plan.truncation,
        filter_confidence=confidence,
    )
