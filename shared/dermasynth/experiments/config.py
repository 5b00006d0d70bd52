"""What an experiment runs: arms, backbones, seeds, and the training, GAN, synthesis and evaluation options.

An *arm* is one way of training: which images (real only, or real plus GAN images), how classes are
balanced (plain shuffling, WeightedRandomSampler, class-weighted loss) and whether standard
augmentation (flips, crops, rotation, colour jitter) is on. Every arm is trained for every backbone
and seed with the same training options otherwise, and evaluated on the same real held-out images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.transforms import Augmentation
from dermasynth.experiments.data import DataSource
from dermasynth.gan.config import GanConfig
from dermasynth.gan.synthesis import SynthesisPlan

ARM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class Arm(BaseModel):
    """One way of training the classifier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ARM_NAME_PATTERN)
    synthetic: bool = Field(default=False, description="train on the real images plus the GAN's images")
    balance: Literal["none", "sampler", "loss"] = Field(
        default="none", description="none: plain shuffling; sampler: WeightedRandomSampler; loss: class-weighted loss"
    )
    augment: bool = Field(default=False, description="standard augmentation: flips, crops, rotation, colour jitter")
    description: str = ""

    def label(self) -> str:
        """What the arm does, in words (its description, or one made from its options)."""
        if self.description:
            return self.description
        parts = ["real + GAN images" if self.synthetic else "real images"]
        parts += {"none": [], "sampler": ["WeightedRandomSampler"], "loss": ["class-weighted loss"]}[self.balance]
        parts += ["standard augmentation"] if self.augment else []
        return ", ".join(parts)


STANDARD_ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm(name="real", description="real images only"),
        Arm(name="sampler", balance="sampler", description="real images + WeightedRandomSampler"),
        Arm(name="gan", synthetic=True, description="real + GAN images"),
        Arm(
            name="gan_sampler",
            synthetic=True,
            balance="sampler",
            description="real + GAN images + WeightedRandomSampler",
        ),
        Arm(name="augment", augment=True, description="real images + standard augmentation only"),
        Arm(name="loss", balance="loss", description="real images + class-weighted loss"),
    )
}
"""The arms a config may name without defining them."""

DEFAULT_COMPARISONS: tuple[tuple[str, str], ...] = (
    ("gan_sampler", "sampler"),
    ("gan", "real"),
    ("sampler", "real"),
    ("gan_sampler", "real"),
    ("augment", "real"),
    ("loss", "real"),
    ("gan", "augment"),
)
"""Pairs (A, B) compared when the config names none and both arms are run; the first is the headline question."""

# Training options an arm, a backbone or a seed decides: the ``train`` section may not set them.
_PER_RUN_FIELDS = frozenset({"model", "seed", "balance"})
# GAN options that change how a run is logged or where it runs, not which generator it makes.
GAN_RUNTIME_FIELDS = frozenset({"snapshot_every", "checkpoint_every", "grid_every", "grid_size", "log_every", "device"})


class EvaluationOptions(BaseModel):
    """How every run is evaluated and compared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Literal["val", "test"] = Field(default="test", description="real held-out images to evaluate on")
    which: Literal["best", "latest"] = Field(default="best", description="checkpoint: best val epoch or last")
    tta: bool = Field(default=False, description="test-time augmentation (8 flips and rotations)")
    bootstrap: int = Field(default=1000, ge=100, le=100_000, description="resamples for intervals and comparisons")
    seed: int = Field(default=0, ge=0, description="seeds the bootstrap")
    min_support: int = Field(default=10, ge=1, description="fewer test images of a class: no per-class verdict")
    batch_size: int = Field(default=128, ge=1, le=4096)


class ExperimentConfig(BaseModel):
    """An ablation: every arm x backbone x seed, with shared training, GAN and synthesis options.

    ``arms`` lists standard arm names (:data:`STANDARD_ARMS`) or full arm definitions.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="experiment", min_length=1, max_length=80)
    arms: list[Arm] = Field(
        default_factory=lambda: [STANDARD_ARMS[n] for n in ("real", "sampler", "gan", "gan_sampler")]
    )
    backbones: list[str] = Field(default_factory=lambda: ["resnet18"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(augment=Augmentation(enabled=False)),
        description="options of every run; model, seed and balance come from the grid",
    )
    gan: GanConfig = Field(default_factory=GanConfig, description="the one GAN every synthetic arm uses")
    synthesis: SynthesisPlan = Field(default_factory=SynthesisPlan, description="how many GAN images per class")
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)
    comparisons: list[tuple[str, str]] | None = Field(
        default=None, description="pairs (A, B) to compare; None: the standard pairs among the arms run"
    )
    figure_arms: tuple[str, str] | None = Field(
        default=None, description="(baseline, augmented) of the per-class F1 figure; None: the first comparison's B, A"
    )

    @field_validator("arms", mode="before")
    @classmethod
    def _standard_names(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        resolved = []
        for item in value:
            if isinstance(item, str):
                if item not in STANDARD_ARMS:
                    raise ValueError(
                        f"arm {item!r} is not a standard arm ({', '.join(STANDARD_ARMS)}); define "
                        "it as {name: ..., synthetic: ..., balance: ..., augment: ...}"
                    )
                resolved.append(STANDARD_ARMS[item])
            else:
                resolved.append(item)
        return resolved

    @field_validator("arms")
    @classmethod
    def _distinct_arms(cls, arms: list[Arm]) -> list[Arm]:
        if not arms:
            raise ValueError("arms must name at least one arm")
        names = [a.name for a in arms]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"arms {twice} are listed twice")
        return arms

    @field_validator("backbones")
    @classmethod
    def _known_backbones(cls, backbones: list[str]) -> list[str]:
        for name in backbones:
            TrainConfig(model=name)  # raises naming the accepted models
        if len(set(backbones)) != len(backbones):
            raise ValueError(f"backbones {backbones} list a model twice")
        return backbones

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ValueError(f"seeds {seeds} must be distinct non-negative integers")
        return seeds

    @field_validator("train", mode="before")
    @classmethod
    def _no_per_run_fields(cls, value: Any) -> Any:
        if isinstance(value, dict):
            decided = sorted(_PER_RUN_FIELDS & value.keys())
            if decided:
                raise ValueError(
                    f"train must not set {decided}: the model comes from backbones, the seed from "
                    "seeds and the class balance from each arm"
                )
            value = {"augment": {"enabled": False}, **value}
        return value

    @field_serializer("train")
    def _train_without_per_run_fields(self, train: TrainConfig) -> dict[str, Any]:
        return train.model_dump(mode="json", exclude=set(_PER_RUN_FIELDS))

    @model_validator(mode="after")
    def _pairs_name_arms(self) -> ExperimentConfig:
        names = {a.name for a in self.arms}
        named = [*(self.comparisons or []), *([self.figure_arms] if self.figure_arms else [])]
        unknown = sorted({n for pair in named for n in pair} - names)
        if unknown:
            raise ValueError(
                f"comparisons/figure_arms name arms {unknown} that are not run; arms: {', '.join(sorted(names))}"
            )
        if any(a == b for a, b in named):
            raise ValueError("a comparison needs two different arms")
        return self

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def needs_gan(self) -> bool:
        """Whether any arm trains on GAN images."""
        return any(a.synthetic for a in self.arms)

    def arm(self, name: str) -> Arm:
        """The arm called ``name``.

        Raises:
            KeyError: if no arm has that name.
        """
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r}; arms: {', '.join(a.name for a in self.arms)}")

    def pairs(self) -> list[tuple[str, str]]:
        """The comparisons to make: the configured ones, or the standard pairs whose two arms are run."""
        if self.comparisons is not None:
            return list(self.comparisons)
        names = {a.name for a in self.arms}
        return [(a, b) for a, b in DEFAULT_COMPARISONS if a in names and b in names]

    def figure_pair(self) -> tuple[str, str] | None:
        """(baseline, augmented) of the per-class F1 figure, or None with fewer than two arms."""
        if self.figure_arms is not None:
            return self.figure_arms
        pairs = self.pairs()
        return (pairs[0][1], pairs[0][0]) if pairs else None

    def train_config(self, arm: Arm, backbone: str, seed: int) -> TrainConfig:
        """The training options of one run: the shared ones with the arm's balance and augmentation."""
        options = self.train.model_dump()
        options.update(
            model=backbone, seed=seed, balance=arm.balance, augment={**options["augment"], "enabled": arm.augment}
        )
        return TrainConfig.model_validate(options)

    def gan_fields(self) -> dict[str, Any]:
        """The GAN options that decide which generator is trained (what its content hash covers)."""
        return self.gan.model_dump(mode="json", exclude=set(GAN_RUNTIME_FIELDS))


def read_experiment_file(path: Path) -> tuple[ExperimentConfig, DataSource | None]:
    """An experiment config file (YAML or JSON): the config and its ``data`` section, if it has one.

    Relative paths in ``data`` are read from the file's folder.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not a YAML mapping.
        pydantic.ValidationError: for options the config refuses (the message names each).
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} must hold a mapping of options (name, data, arms, backbones, seeds, train, gan, "
            f"synthesis, evaluation, comparisons), not {type(raw).__name__}"
        )
    data = raw.pop("data", None)
    source = None if data is None else DataSource.model_validate(data).relative_to(path.resolve().parent)
    return ExperimentConfig.model_validate(raw), source
