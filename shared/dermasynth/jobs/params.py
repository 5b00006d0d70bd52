"""The parameters of each job kind, validated with sensible bounds before a job is queued.

``POST /v1/jobs`` takes ``{"kind": ..., "params": {...}}``; the kind picks the model below. Engine
options reuse the engines' own validated configs (:class:`~dermasynth.classifier.config.TrainConfig`,
:class:`~dermasynth.gan.config.GanConfig`), so the API accepts exactly what the engines accept, with a
few limits added for requests that come over the network: weights only by torchvision name or as a
state_dict file in the object store under the owner's ``incoming/{owner}/`` prefix (never a file of the
worker; the owner is checked at submission, see :mod:`dermasynth.classifier.store_weights`), bounded
step counts, a floor on every ``*_every`` option (so a job writes a bounded number of snapshots, grids,
checkpoints and log entries), and bounded synthetic image counts, checked again against the dataset's
real class counts at submission (:func:`check_synthesis_budget`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from dermasynth.classifier import store_weights
from dermasynth.classifier.config import TrainConfig
from dermasynth.experiments.config import ExperimentConfig
from dermasynth.gan.config import GanConfig
from dermasynth.gan.synthesis import SynthesisPlan, counts_for
from dermasynth.jobs.records import JobKind

DatasetId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,79}$")]
MAX_GAN_STEPS = 1_000_000
MAX_SYNTHETIC_PER_CLASS = 100_000
MAX_SYNTHETIC_TOTAL = 200_000
MAX_EXPERIMENT_RUNS = 200
MAX_GAN_OUTPUTS: dict[str, int] = {
    "snapshot_every": 100,  # EMA-generator snapshots kept
    "grid_every": 100,  # per-class sample grids written
    "checkpoint_every": 2_000,  # rolling checkpoint writes
    "log_every": 20_000,  # entries of stats.json
}
"""Most outputs of each kind one GAN run may write over the API: ``*_every`` >= ceil(steps / this)."""
MAX_TRAIN_LOG_READS_PER_EPOCH = 10_000
JobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Split = Literal["val", "test"]


def _api_weights(model: str, weights: str | None) -> str | None:
    """The model's own torchvision weights names, or a ``store:incoming/{owner}/...`` file (its form checked
    here, its owner at submission); never a path or file name of the worker."""
    if weights is None:
        return None
    if store_weights.is_store_reference(weights):
        store_weights.store_key(weights)
        return weights
    import torchvision.models

    try:
        enum = torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        enum = None
    names = [] if enum is None else list(dict.fromkeys(["DEFAULT", *enum.__members__]))  # DEFAULT is also a member
    member = weights.split(".", 1)[1] if enum is not None and weights.startswith(enum.__name__ + ".") else weights
    if member not in names:
        accepted = ", ".join(names) if names else f"none ({model} has no torchvision weights)"
        raise ValueError(
            f"weights {weights!r}: only the torchvision weights names of {model} are accepted over the API "
            f"(no files of the worker); accepted: {accepted}; a state_dict file you put in the object store, "
            f"store:incoming/{{owner}}/<path>.pth; or None to train from scratch"
        )
    return weights


def _bounded_train(config: TrainConfig) -> TrainConfig:
    _api_weights(config.model, config.weights)
    return config


class TrainingParams(BaseModel):
    """Train a classifier on a dataset, then evaluate its best epoch on real held-out images."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: DatasetId
    config: TrainConfig = Field(default_factory=TrainConfig, description="the classifier training options")
    evaluate_split: Split | None = Field(
        default="test", description="evaluate the best epoch on this split when training ends (None: skip)"
    )
    tta: bool = Field(default=False, description="test-time augmentation in that evaluation")

    @field_validator("config")
    @classmethod
    def _remote_safe(cls, config: TrainConfig) -> TrainConfig:
        return _bounded_train(config)


class SynthesisParams(BaseModel):
    """Train a class-conditional GAN on a dataset, then publish a new dataset: its rows plus synthetic images."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: DatasetId
    gan: GanConfig = Field(default_factory=GanConfig, description="the GAN training options")
    plan: SynthesisPlan = Field(default_factory=SynthesisPlan, description="how many images per class")
    name: str | None = Field(default=None, min_length=1, max_length=100, description="the new dataset's name")

    @field_validator("gan")
    @classmethod
    def _gan_within_limits(cls, gan: GanConfig) -> GanConfig:
        return _bounded_gan(gan)

    @field_validator("plan")
    @classmethod
    def _plan_within_limits(cls, plan: SynthesisPlan) -> SynthesisPlan:
        if plan.min_confidence is not None:
            raise ValueError(
                "plan.min_confidence (filtered synthesis) needs a filter classifier run, which a synthesis job "
                "does not have: use an experiment arm with synthesis {min_confidence: P} or `dermasynth gan "
                "sample --filter-run RUN_DIR --min-confidence P`"
            )
        return _bounded_plan(plan)


def _bounded_gan(gan: GanConfig) -> GanConfig:
    if gan.steps > MAX_GAN_STEPS:
        raise ValueError(f"gan.steps {gan.steps} is more than the {MAX_GAN_STEPS} accepted over the API")
    for option, most in MAX_GAN_OUTPUTS.items():
        floor = math.ceil(gan.steps / most)
        if getattr(gan, option) < floor:
            raise ValueError(
                f"gan.{option} {getattr(gan, option)} with {gan.steps} steps writes more than {most} outputs; "
                f"over the API it must be at least {floor} (steps / {most})"
            )
    return gan


def _bounded_plan(plan: SynthesisPlan) -> SynthesisPlan:
    asked = [*(plan.counts or {}).values(), plan.at_least or 0]
    if max(asked) > MAX_SYNTHETIC_PER_CLASS:
        raise ValueError(
            f"the plan asks for {max(asked)} images of one class; at most {MAX_SYNTHETIC_PER_CLASS} "
            "are accepted over the API"
        )
    return plan


class ExperimentParams(BaseModel):
    """Run an ablation (arms x backbones x seeds, one shared GAN) on a dataset and write its report."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: DatasetId
    config: ExperimentConfig = Field(default_factory=ExperimentConfig, description="the experiment's options")

    @field_validator("config")
    @classmethod
    def _remote_safe(cls, config: ExperimentConfig) -> ExperimentConfig:
        runs = len(config.arms) * len(config.backbones) * len(config.seeds)
        if runs > MAX_EXPERIMENT_RUNS:
            raise ValueError(
                f"the experiment has {runs} runs (arms x backbones x seeds); at most "
                f"{MAX_EXPERIMENT_RUNS} are accepted over the API"
            )
        for backbone in config.backbones:
            _api_weights(backbone, config.train.weights)
        _bounded_gan(config.gan)
        _bounded_plan(config.synthesis)
        for arm in config.arms:  # issue 18: an arm may change the GAN and the plan
            if arm.synthetic:
                _bounded_gan(config.gan_config(arm))
                _bounded_plan(config.synthesis_plan(arm))
        if config.quality.inception_weights is not None:
            raise ValueError(
                "quality.inception_weights names a local file, which cannot be named over the API; the "
                "worker's quality report then says the standard feature space was not measured"
            )
        return config


def check_synthesis_budget(plan: SynthesisPlan, train_counts: dict[str, int]) -> dict[str, int]:
    """The images ``plan`` really generates for a dataset with these train-split class counts, within limits.

    ``balance`` and ``at_least`` only say how many images to reach, so the effective numbers are known only
    with the dataset: ``ratio`` 100 on a class of 1,000 images asks for 100,000 new images of every class.

    Raises:
        ValueError: more than :data:`MAX_SYNTHETIC_PER_CLASS` images of a class or
            :data:`MAX_SYNTHETIC_TOTAL` in all, or a class the dataset does not hold.
    """
    counts = counts_for(train_counts, plan)
    label, most = max(counts.items(), key=lambda item: item[1], default=("", 0))
    if most > MAX_SYNTHETIC_PER_CLASS:
        raise ValueError(
            f"the {plan.mode} plan makes {most} synthetic images of class {label!r} for this dataset; at most "
            f"{MAX_SYNTHETIC_PER_CLASS} per class are accepted over the API (lower ratio/at_least/counts)"
        )
    if sum(counts.values()) > MAX_SYNTHETIC_TOTAL:
        raise ValueError(
            f"the {plan.mode} plan makes {sum(counts.values())} synthetic images for this dataset; at most "
            f"{MAX_SYNTHETIC_TOTAL} in all are accepted over the API"
        )
    return counts


class EvaluationParams(BaseModel):
    """Evaluate a finished training job's model on a split of a dataset (its own dataset by default)."""

    model_config = ConfigDict(extra="forbid")

    training_job_id: JobId
    dataset_id: DatasetId | None = Field(default=None, description="None: the dataset the model was trained on")
    split: Split = "test"
    tta: bool = False
    which: Literal["best", "latest"] = "best"
    bootstrap: int = Field(default=1000, ge=0, le=10_000, description="resamples for the 95% intervals")


ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]


class ExportParams(BaseModel):
    """Export a finished training job's model for serving (ONNX, calibrated on validation) as a new version.

    The version is registered but not live until it is deployed.
    """

    model_config = ConfigDict(extra="forbid")

    training_job_id: JobId
    name: ModelName = "classifier"
    which: Literal["best", "latest"] = "best"
    min_probability: float = Field(
        default=0.0, ge=0, le=1, description="abstain below this top calibrated probability (0: off)"
    )
    ood_quantile: float = Field(default=0.95, ge=0.5, le=1, description="validation quantile of the OOD threshold")
    coverage: float = Field(default=0.9, ge=0.5, le=0.99, description="target coverage of the prediction sets")
    malignant_sensitivity: float = Field(
        default=0.85, ge=0.5, le=1, description="malignant sensitivity the operating point reaches on validation"
    )
    max_set_size: int = Field(default=2, ge=1, le=20, description="abstain when a prediction set is larger")
    deployment_prior: dict[str, float] | None = Field(
        default=None,
        description="class frequencies where the model is deployed (class code -> share); None: the real "
        "frequencies of the training split",
    )

    @field_validator("deployment_prior")
    @classmethod
    def _prior(cls, prior: dict[str, float] | None) -> dict[str, float] | None:
        if prior is not None and (any(v < 0 for v in prior.values()) or sum(prior.values()) <= 0):
            raise ValueError("deployment_prior needs non-negative shares with a positive sum")
        return prior


class IngestParams(BaseModel):
    """Import a dataset (an uploaded zip or a folder under ``incoming/{owner}/``) and publish it.

    Submitted by ``POST /v1/datasets`` and ``POST /v1/datasets/register`` (never through ``POST /v1/jobs``):
    the gateway checks what needs no download and stores the upload; the worker does the import.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["upload", "store"] = Field(description="an uploaded zip, or a prefix already in the store")
    location: str = Field(
        min_length=1,
        max_length=500,
        description="the zip's key (incoming/{owner}/uploads/{job_id}.zip) or the store prefix to register",
    )
    name: str = Field(min_length=1, max_length=100, description="the new dataset's name")
    format: Literal["auto", "ham10000", "isic-csv", "imagefolder", "manifest"] = "auto"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    val_frac: float = Field(default=0.15, ge=0, le=0.5)
    test_frac: float = Field(default=0.15, ge=0, le=0.5)

    @model_validator(mode="after")
    def _training_share(self) -> IngestParams:
        if self.val_frac + self.test_frac >= 1:
            raise ValueError(
                f"val_frac {self.val_frac} and test_frac {self.test_frac} leave no training share; "
                "their sum must be below 1"
            )
        return self


class TrainingRequest(BaseModel):
    """``POST /v1/jobs`` for a training job."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[JobKind.TRAINING]
    params: TrainingParams


class SynthesisRequest(BaseModel):
    """``POST /v1/jobs`` for a synthesis job."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[JobKind.SYNTHESIS]
    params: SynthesisParams


class ExperimentRequest(BaseModel):
    """``POST /v1/jobs`` for an experiment job."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[JobKind.EXPERIMENT]
    params: ExperimentParams


class ExportRequest(BaseModel):
    """``POST /v1/jobs`` for an export job (``POST /v1/models`` submits the same)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[JobKind.EXPORT]
    params: ExportParams


class EvaluationRequest(BaseModel):
    """``POST /v1/jobs`` for an evaluation job."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[JobKind.EVALUATION]
    params: EvaluationParams


JobRequest = Annotated[
    SynthesisRequest | TrainingRequest | EvaluationRequest | ExperimentRequest | ExportRequest,
    Field(discriminator="kind"),
]
"""A job submission: the kind picks the parameter model."""

PARAMS: dict[JobKind, type[BaseModel]] = {
    JobKind.SYNTHESIS: SynthesisParams,
    JobKind.TRAINING: TrainingParams,
    JobKind.EVALUATION: EvaluationParams,
    JobKind.EXPERIMENT: ExperimentParams,
    JobKind.EXPORT: ExportParams,
    JobKind.INGEST: IngestParams,
}


def parse_params(kind: JobKind, params: dict[str, Any]) -> BaseModel:
    """Validate a stored job's parameters again (what a worker does before it runs the job).

    Raises:
        ValueError: for a kind this installation cannot run.
        pydantic.ValidationError: for parameters its model refuses.
    """
    if kind not in PARAMS:
        raise ValueError(
            f"job kind {kind.value!r} cannot run here; kinds available: {', '.join(k.value for k in PARAMS)}"
        )
    return PARAMS[kind].model_validate(params)
