"""What a GAN run keeps in its object store, and how a trained generator is read back.

Keys, relative to the run's store (``FilesystemStore(GAN_DIR)`` on the CLI, ``runs/{job_id}`` in jobs):

============================  ================================================================================
``options.json``              the resolved :class:`GanConfig`, classes, and image counts trained on
``checkpoint.pth``            the latest full training state (resume)
``snapshots/step-N.pth``      EMA generator every ``snapshot_every`` steps
``grids/step-N/<cls>.png``    per-class sample grids of the EMA generator; ``_all.png``: one row per class
``stats.json``                losses, R1, augmentation probability, averaged every ``log_every`` steps
``generator.pth``             the final EMA generator, what sampling and evaluation load
``result.json``               written last: the run is complete
``gan_report.json``           quality figures, written by ``evaluate_gan`` (grids under ``evaluation/``)
``feature_classifier/``       the classifier run whose features FID/KID use, when none was given
============================  ================================================================================
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, Field

from dermasynth.gan.config import GanConfig
from dermasynth.gan.networks import Discriminator, Generator
from dermasynth.storage.base import ObjectNotFound, ObjectStore
from dermasynth.storage.state_dicts import LATEST, load_state

logger = logging.getLogger(__name__)

OPTIONS_KEY = "options.json"
STATS_KEY = "stats.json"
GENERATOR_KEY = "generator.pth"
RESULT_KEY = "result.json"
REPORT_KEY = "gan_report.json"
SNAPSHOT_PREFIX = "snapshots"
GRID_PREFIX = "grids"


class GanResult(BaseModel):
    """What a finished training run produced (``result.json``)."""

    step: int = Field(description="training steps done")
    classes: list[str]
    image_size: int
    generator_id: str = Field(description="sha256 of the EMA generator's state: the provenance of its images")
    train_images: dict[str, int] = Field(description="real training images per class")
    generator: str = GENERATOR_KEY
    checkpoint: str = LATEST
    snapshots: list[str] = Field(default_factory=list)
    grids: list[str] = Field(default_factory=list, description="keys of the latest per-class grids")
    device: str
    seconds: float = Field(description="training time, summed over resumed sessions")
    steps_per_s: float
    final_stats: dict[str, float] = Field(default_factory=dict, description="the last stats.json entry")


def build_generator(config: GanConfig, num_classes: int) -> Generator:
    """The generator a resolved config describes."""
    return Generator(
        num_classes,
        config.image_size,
        z_dim=config.z_dim,
        w_dim=config.w_dim,
        mapping_layers=config.mapping_layers,
        channel_base=_width(config.channel_base),
        max_channels=_width(config.max_channels),
    )


def build_discriminator(config: GanConfig, num_classes: int) -> Discriminator:
    """The discriminator a resolved config describes."""
    return Discriminator(
        num_classes,
        config.image_size,
        channel_base=_width(config.channel_base),
        max_channels=_width(config.max_channels),
    )


def _width(value: int | None) -> int:
    if value is None:
        raise ValueError("the config is not resolved (channel_base/max_channels are None); call .resolved() first")
    return value


def generator_id(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the generator's tensors (names, dtypes, shapes, values) in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class TrainedGenerator:
    """An EMA generator ready to sample, with what it was trained on."""

    generator: Generator
    classes: list[str]
    config: GanConfig
    generator_id: str
    step: int

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def class_index(self, label: str) -> int:
        """Index of a class name. Raises ValueError naming the classes this generator knows."""
        if label not in self.classes:
            raise ValueError(f"class {label!r} was not trained by this GAN; it knows {', '.join(self.classes)}")
        return self.classes.index(label)


def generator_state(classes: list[str], config: GanConfig, state: dict[str, torch.Tensor], step: int) -> dict[str, Any]:
    """The dictionary saved as ``generator.pth`` and as snapshots."""
    return {
        "generator_ema": state,
        "classes": classes,
        "options": config.model_dump(mode="json"),
        "step": step,
        "generator_id": generator_id(state),
    }


def load_generator(store: ObjectStore, device: str | torch.device | None = None) -> TrainedGenerator:
    """Load the final EMA generator of a run (``generator.pth``), or the latest checkpoint's if the run
    has not finished (a warning is logged).

    Raises:
        FileNotFoundError: if the store holds neither: it is not a GAN run.
    """
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        saved = load_state(store, GENERATOR_KEY)
    except ObjectNotFound:
        try:
            saved = load_state(store, LATEST)
        except ObjectNotFound:
            raise FileNotFoundError(
                f"no {GENERATOR_KEY} or {LATEST} in the GAN store: train one first with `dermasynth gan train`"
            ) from None
        logger.warning(
            "training has not finished; sampling the EMA generator of the checkpoint at step %d", saved["step"]
        )
    config = GanConfig.model_validate(saved["options"]).model_copy(update={"device": str(target)})
    generator = build_generator(config, len(saved["classes"]))
    generator.load_state_dict(saved["generator_ema"])
    generator.to(target).eval().requires_grad_(False)
    return TrainedGenerator(
        generator, list(saved["classes"]), config, generator_id(saved["generator_ema"]), int(saved["step"])
    )
