"""Training options: one validated model, stored in every checkpoint and accepted as a job's parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dermasynth.data.transforms import Augmentation

# Fields that only change how fast a run goes or where, not what it computes: a resumed run may differ in them.
RUNTIME_FIELDS = frozenset({"num_workers", "device", "log_every", "keep_epoch_checkpoints"})


class TrainConfig(BaseModel):
    """Everything that decides a classifier training run.

    Defaults follow the paper the platform reproduces (Adam at 1e-3, from scratch, class-balanced
    sampling) and the torchvision classification references.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="resnet18", description="a torchvision classification model name")
    image_size: int = Field(default=64, ge=16, le=1024, description="square input side in pixels")
    crop: Literal["center", "none"] = "center"
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["cosine", "plateau", "none"] = "cosine"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    grad_clip: float | None = Field(default=None, gt=0, description="max gradient L2 norm; None: no clipping")
    balance: Literal["sampler", "loss", "none"] = Field(
        default="sampler",
        description="sampler: WeightedRandomSampler; loss: class-weighted cross-entropy; none: plain shuffling",
    )
    synthetic_weight: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="loss weight of synthetic training images relative to real ones (1: the same)",
    )
    amp: bool = False
    amp_dtype: Literal["bf16", "fp16"] | None = Field(
        default=None, description="None: fp16 (with GradScaler) on CUDA, bf16 on CPU"
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    deterministic: bool = Field(default=False, description="torch.use_deterministic_algorithms (slower)")
    patience: int | None = Field(
        default=None, ge=1, description="stop after this many epochs without a better val balanced accuracy"
    )
    freeze_epochs: int = Field(default=0, ge=0, description="train only the new head for these first epochs")
    channels_last: bool = False
    weights: str | None = Field(
        default=None,
        description="None: from scratch; a local state_dict file; a torchvision weights name (needs network); "
        "over the API a torchvision name or store:incoming/{owner}/<path>.pth, a state_dict file in the object "
        "store under the owner's prefix",
    )
    augment: Augmentation = Field(default_factory=Augmentation)
    data_path: Literal["auto", "cache", "per_image"] = Field(
        default="auto",
        description="auto: decode once into the decoded-image cache and augment whole batches on the training "
        "device, or the per-image path when the cache is over its disk budget; cache: insist on the cache; "
        "per_image: PIL decode and augmentation per image in loader processes (num_workers)",
    )
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cut epochs short (smoke runs)")
    num_workers: int = Field(default=2, ge=0, le=64)
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    log_every: int = Field(default=10, ge=1, description="steps between loss reads (each one syncs a GPU)")
    keep_epoch_checkpoints: bool = Field(default=True, description="also keep epoch_NNN.pth beside checkpoint.pth")

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        import torchvision.models

        accepted = torchvision.models.list_models(module=torchvision.models)
        if name not in accepted:
            raise ValueError(
                f"model {name!r} is not a torchvision classification model; accepted: {', '.join(accepted)}"
            )
        return name

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError(f"device {device!r} is not accepted: use auto, cpu, cuda or cuda:N")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.freeze_epochs and self.weights is None:
            raise ValueError("freeze_epochs trains the head on a frozen backbone, which needs pretrained weights")
        if self.freeze_epochs and self.freeze_epochs >= self.epochs:
            raise ValueError(f"freeze_epochs ({self.freeze_epochs}) must be less than epochs ({self.epochs})")
        if self.amp_dtype is not None and not self.amp:
            raise ValueError(f"amp_dtype={self.amp_dtype!r} needs amp=True")
        return self

    def result_fields(self) -> dict[str, object]:
        """The options that decide the result (all but the runtime ones): what a resume must match.

        ``synthetic_weight`` is left out at its default (1), so runs keyed before it existed keep their keys.
        """
        fields = self.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))
        if fields.get("synthetic_weight") == 1.0:
            del fields["synthetic_weight"]
        return fields
