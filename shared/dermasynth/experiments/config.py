"""What an experiment runs: arms, backbones, seeds, and the training, GAN, synthesis and evaluation options.

An *arm* is one way of training: which images (real only, or real plus GAN images), how classes are
balanced (plain shuffling, WeightedRandomSampler, class-weighted loss) and whether standard
augmentation (flips, crops, rotation, colour jitter) is on. Every arm is trained for every backbone
and seed with the same training options otherwise, and evaluated on the same real held-out images.

Synthetic arms have more levers, each one field of the arm (issue 18):

* ``synthesis``: changes to the experiment's synthesis plan for this arm (e.g. ``{mode: real_ratio,
  ratio: 2, classes: [akiec, df, vasc]}``: the synthetic-to-real ratio per rare class; ``{truncation:
  0.7}``; ``{min_confidence: 0.5}``: filtered synthesis, scored by the experiment's filter classifier);
* ``synthetic_weight``: the loss weight of synthetic images;
* ``pretrain_fraction``: that share of the classifier steps on real + GAN images, the rest fine-tuning
  on the real images only (one run, the same number of steps as every other arm);
* ``gan``: changes to the experiment's GAN options for this arm (e.g. the classifier's resolution and a
  longer budget); arms with the same GAN options share one GAN.

``ratio_sweep`` adds one arm per ratio (``ratio_0_5``, ``ratio_1`` ...). Every arm gets the same
number of classifier steps (checked before anything trains); the GAN's cost is reported beside it.
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
    synthesis: dict[str, Any] | None = Field(
        default=None, description="changes to the experiment's synthesis plan for this arm (SynthesisPlan fields)"
    )
    gan: dict[str, Any] | None = Field(
        default=None, description="changes to the experiment's GAN options for this arm (GanConfig fields)"
    )
    synthetic_weight: float = Field(default=1.0, ge=0, le=100, description="loss weight of synthetic images")
    pretrain_fraction: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="share of the steps on real + GAN images before real-only fine-tuning (None: no pre-training)",
    )
    description: str = ""

    @model_validator(mode="after")
    def _levers_need_synthesis(self) -> Arm:
        used = [
            name
            for name, on in (
                ("synthesis", self.synthesis is not None),
                ("gan", self.gan is not None),
                ("synthetic_weight", self.synthetic_weight != 1.0),
                ("pretrain_fraction", self.pretrain_fraction is not None),
            )
            if on
        ]
        if used and not self.synthetic:
            raise ValueError(f"arm {self.name!r} sets {used}, which act on GAN images: set synthetic: true")
        if self.synthesis is not None:
            SynthesisPlan.model_validate(self.synthesis)  # names a wrong field or value early
        if self.gan is not None:
            unknown = sorted(set(self.gan) - set(GanConfig.model_fields))
            if unknown:
                raise ValueError(f"arm {self.name!r}: gan options {unknown} are not GAN options")
        return self

    def label(self) -> str:
        """What the arm does, in words (its description, or one made from its options)."""
        if self.description:
            return self.description
        parts = ["real + GAN images" if self.synthetic else "real images"]
        parts += {"none": [], "sampler": ["WeightedRandomSampler"], "loss": ["class-weighted loss"]}[self.balance]
        parts += ["standard augmentation"] if self.augment else []
        if self.synthesis:
            parts.append("synthesis " + ", ".join(f"{k}={v}" for k, v in self.synthesis.items()))
        if self.gan:
            parts.append("GAN " + ", ".join(f"{k}={v}" for k, v in self.gan.items()))
        if self.synthetic_weight != 1.0:
            parts.append(f"synthetic loss weight {self.synthetic_weight:g}")
        if self.pretrain_fraction is not None:
            parts.append(f"{self.pretrain_fraction:.0%} of steps pre-training on real + GAN, then real only")
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
_PER_RUN_FIELDS = frozenset({"model", "seed", "balance", "synthetic_weight"})
# GAN options that change how a run is logged or where it runs, not which generator it makes.
GAN_RUNTIME_FIELDS = frozenset({"snapshot_every", "checkpoint_every", "grid_every", "grid_size", "log_every", "device"})


class RatioSweep(BaseModel):
    """One synthetic arm per synthetic-to-real ratio of the rare classes (``ratio_{r}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratios: list[float] = Field(min_length=1, description="new images per real image of each class")
    classes: list[str] = Field(default_factory=lambda: ["akiec", "df", "vasc"], min_length=1)
    balance: Literal["none", "sampler", "loss"] = "sampler"

    def arms(self) -> list[Arm]:
        return [
            Arm(
                name="ratio_" + f"{r:g}".replace(".", "_"),
                synthetic=True,
                balance=self.balance,
                synthesis={"mode": "real_ratio", "ratio": r, "classes": list(self.classes)},
                description=f"real + {r:g} GAN images per real image of {', '.join(self.classes)}"
                + ("" if self.balance == "none" else f", {self.balance}"),
            )
            for r in self.ratios
        ]


class QualityOptions(BaseModel):
    """Per-class GAN quality of every GAN the experiment trains (FID/KID, precision/recall, near-copies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    samples_per_class: int | None = Field(default=None, ge=2, description="default: as many as real images")
    inception_weights: str | None = Field(
        default=None,
        description="local torch-fidelity Inception file (pt_inception-2015-12-05): FID/KID also in the standard space",
    )


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
    resample_seeds: bool = Field(
        default=True, description="intervals resample the seeds of each arm as well as the test images"
    )


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
    ratio_sweep: RatioSweep | None = Field(default=None, description="adds one arm per synthetic-to-real ratio")
    rare_classes: list[str] = Field(
        default_factory=lambda: ["akiec", "df", "vasc"], description="classes the rare-class answer is given for"
    )
    baseline_arm: str = Field(default="sampler", description="the arm rare-class gains are measured against")
    min_recall_gain: float = Field(default=0.05, gt=0, le=1, description="recall gain that counts as a yes")
    filter_balance: Literal["none", "sampler", "loss"] = Field(
        default="sampler", description="balance of the real-only classifier that scores filtered synthesis"
    )
    quality: QualityOptions = Field(default_factory=QualityOptions)

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

    @model_validator(mode="before")
    @classmethod
    def _expand_sweep(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("ratio_sweep"):
            sweep = RatioSweep.model_validate(value["ratio_sweep"])
            arms = list(value.get("arms") or ["real", "sampler", "gan", "gan_sampler"])
            have = {a if isinstance(a, str) else (a.name if isinstance(a, Arm) else a.get("name")) for a in arms}
            value = {**value, "arms": arms + [a for a in sweep.arms() if a.name not in have]}
        return value

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
        for arm in self.arms:
            if arm.pretrain_fraction is not None:
                self.pretrain_epochs(arm)
            if arm.gan is not None:
                GanConfig.model_validate({**self.gan.model_dump(), **arm.gan})
            SynthesisPlan.model_validate(self.synthesis_plan(arm).model_dump())
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
        """The comparisons to make: the configured ones, or the standard pairs whose two arms are run, then
        every other synthetic arm against the baseline arm."""
        if self.comparisons is not None:
            return list(self.comparisons)
        names = {a.name for a in self.arms}
        pairs = [(a, b) for a, b in DEFAULT_COMPARISONS if a in names and b in names]
        if self.baseline_arm in names:
            pairs += [
                (arm.name, self.baseline_arm)
                for arm in self.arms
                if arm.synthetic and arm.name not in STANDARD_ARMS and (arm.name, self.baseline_arm) not in pairs
            ]
        return pairs

    def pretrain_epochs(self, arm: Arm) -> int:
        """Epochs of a pre-training arm's first phase (real + GAN images); the rest fine-tune on real images.

        Raises:
            ValueError: if the split leaves either phase without an epoch.
        """
        assert arm.pretrain_fraction is not None
        first = round(self.train.epochs * arm.pretrain_fraction)
        if not 1 <= first < self.train.epochs:
            raise ValueError(
                f"arm {arm.name!r}: pretrain_fraction {arm.pretrain_fraction} of {self.train.epochs} epochs leaves "
                "a phase without an epoch; use more epochs (both phases keep max_steps_per_epoch)"
            )
        return first

    def synthesis_plan(self, arm: Arm) -> SynthesisPlan:
        """The synthesis plan of a synthetic arm: the experiment's, changed by the arm's ``synthesis``."""
        if not arm.synthesis:
            return self.synthesis
        return SynthesisPlan.model_validate({**self.synthesis.model_dump(), **arm.synthesis})

    def gan_config(self, arm: Arm) -> GanConfig:
        """The GAN options of a synthetic arm: the experiment's, changed by the arm's ``gan``."""
        if not arm.gan:
            return self.gan
        return GanConfig.model_validate({**self.gan.model_dump(), **arm.gan})

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
            model=backbone,
            seed=seed,
            balance=arm.balance,
            augment={**options["augment"], "enabled": arm.augment},
            synthetic_weight=arm.synthetic_weight,
        )
        return TrainConfig.model_validate(options)

    def gan_fields(self, arm: Arm | None = None) -> dict[str, Any]:
        """The GAN options that decide which generator is trained (what its content hash covers)."""
        gan = self.gan if arm is None else self.gan_config(arm)
        return gan.model_dump(mode="json", exclude=set(GAN_RUNTIME_FIELDS))

    def filter_config(self) -> TrainConfig:
        """The real-only classifier that scores filtered synthesis: the shared training options on the first
        backbone and seed with ``filter_balance`` (the same run as that arm's, so it is trained once)."""
        return self.train_config(Arm(name="filter", balance=self.filter_balance), self.backbones[0], self.seeds[0])


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
            f"synthesis, evaluation, comparisons, ratio_sweep, quality), not {type(raw).__name__}"
        )
    data = raw.pop("data", None)
    source = None if data is None else DataSource.model_validate(data).relative_to(path.resolve().parent)
    return ExperimentConfig.model_validate(raw), source
