"""The options of one GAN training run, validated, and their resolution for a device.

Fields left as ``None`` (network width, R1 weight, device) are filled by :meth:`GanConfig.resolved`
from the image size, the batch size and the device; the resolved copy is what a run records in
``options.json`` and in its checkpoints, so a resumed run rebuilds exactly the same networks.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dermasynth.labels import normalize_label

logger = logging.getLogger(__name__)

IMAGE_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)
CPU_IMAGE_SIZES: tuple[int, ...] = (16, 32, 64)
DIFFAUGMENT_OPS: tuple[str, ...] = ("color", "translation", "cutout")

# Network width per device when the config leaves it open: small enough for a few CPU cores at 32-64 px,
# StyleGAN2-like widths on a GPU (channels at resolution r = min(max_channels, channel_base // r)).
_WIDTH: dict[str, tuple[int, int]] = {"cpu": (1024, 64), "cuda": (16384, 512)}


class GanConfig(BaseModel):
    """Options of :func:`dermasynth.gan.training_loop.train_gan`.

    The defaults train a 64 px class-conditional GAN that runs on a CPU; raise ``image_size`` to 128
    or 256 on a GPU (the width then defaults to StyleGAN2-like channel counts).
    """

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(default=64, description="16, 32 or 64 on CPU; 128 or 256 on GPU")
    crop: Literal["center", "none"] = Field(
        default="center", description="how real images become squares: central square or squashed whole image"
    )
    steps: int = Field(default=10_000, ge=1, description="generator updates (each with one discriminator update)")
    batch_size: int = Field(default=32, ge=2, le=1024)
    lr_g: float = Field(default=0.0025, gt=0, le=1)
    lr_d: float = Field(default=0.0004, gt=0, le=1)
    betas: tuple[float, float] = (0.0, 0.99)
    z_dim: int = Field(default=128, ge=1, le=2048)
    w_dim: int = Field(default=256, ge=8, le=2048)
    mapping_layers: int = Field(default=2, ge=1, le=8)
    channel_base: int | None = Field(default=None, ge=16, description="network width; None: by device")
    max_channels: int | None = Field(default=None, ge=4, le=1024, description="None: by device")
    loss: Literal["hinge", "nonsaturating"] = "nonsaturating"
    r1_gamma: float | None = Field(
        default=None, ge=0, description="R1 weight; None: StyleGAN2-ADA's heuristic 0.0002 * size^2 / batch"
    )
    r1_interval: int = Field(default=4, ge=1, description="lazy R1: penalize every N discriminator steps")
    augment: Literal["diffaugment", "ada", "none"] = Field(
        default="ada", description="ada: adaptive (off until the discriminator overfits); diffaugment: always on"
    )
    diffaugment_policy: str = Field(
        default="color,translation,cutout", description=f"comma-separated subset of {', '.join(DIFFAUGMENT_OPS)}"
    )
    ada_target: float = Field(default=0.6, gt=0, lt=1, description="ADA: target E[sign(D(real))]")
    ada_interval: int = Field(default=4, ge=1, description="ADA: adjust p every N steps")
    ada_speed_images: int = Field(default=100_000, ge=1, description="ADA: images over which p can move from 0 to 1")
    mirror: bool = Field(default=True, description="random x/y flips of real images (dermoscopy has no up or down)")
    class_sampling: Literal["proportional", "sqrt", "balanced"] = Field(
        default="sqrt", description="how often each class is drawn: by its image count, its square root, or equally"
    )
    ema_beta: float = Field(default=0.999, ge=0, lt=1, description="EMA decay per step (warmed up over early steps)")
    snapshot_every: int = Field(default=1000, ge=1, description="steps between EMA-generator snapshots")
    checkpoint_every: int = Field(default=250, ge=1, description="steps between rolling checkpoint.pth saves")
    grid_every: int = Field(default=500, ge=1, description="steps between per-class sample grids")
    grid_size: int = Field(default=4, ge=1, le=16, description="per-class grids are grid_size x grid_size images")
    log_every: int = Field(default=50, ge=1, description="steps averaged into one entry of stats.json")
    amp: bool = Field(default=True, description="mixed precision; used on CUDA only")
    device: str | None = Field(default=None, description="'cpu', 'cuda', 'cuda:N'; None: CUDA when available")
    seed: int = Field(default=0, ge=0)
    classes: list[str] | None = Field(default=None, description="classes to learn; None: all in the train split")

    @field_validator("image_size")
    @classmethod
    def _known_size(cls, value: int) -> int:
        if value not in IMAGE_SIZES:
            raise ValueError(f"image_size {value} is not supported; choose one of {', '.join(map(str, IMAGE_SIZES))}")
        return value

    @field_validator("diffaugment_policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        ops = [op.strip() for op in value.split(",") if op.strip()]
        unknown = [op for op in ops if op not in DIFFAUGMENT_OPS]
        if unknown:
            raise ValueError(
                f"diffaugment_policy holds {unknown}; use a comma-separated subset of {', '.join(DIFFAUGMENT_OPS)}"
            )
        return ",".join(ops)

    @field_validator("classes")
    @classmethod
    def _normal_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("classes must name at least one class, or be left out for all classes")
        labels = sorted({normalize_label(label) for label in value})
        if len(labels) != len(value):
            raise ValueError(f"classes {value} lists a class twice")
        return labels

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            torch.device(value)
        except RuntimeError as exc:
            raise ValueError(f"device {value!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
        return value

    @model_validator(mode="after")
    def _batch_fits_minibatch_std(self) -> GanConfig:
        if self.batch_size % 2:
            raise ValueError(
                f"batch_size {self.batch_size} must be even (the discriminator's minibatch "
                "statistics work on groups of 2 or 4)"
            )
        return self

    def resolved(self) -> GanConfig:
        """A copy with every open option filled for the device it will run on.

        Raises:
            ValueError: if CUDA is asked for but is not available.
        """
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but CUDA is not available; use device='cpu'")
        if device.type not in _WIDTH:
            raise ValueError(f"device {device} is not supported; use 'cpu' or 'cuda'")
        if device.type == "cpu" and self.image_size not in CPU_IMAGE_SIZES:
            logger.warning("image_size %d on CPU will be very slow; 32 or 64 px is the CPU range", self.image_size)
        base, top = _WIDTH[device.type]
        return self.model_copy(
            update={
                "device": str(device),
                "channel_base": self.channel_base or base,
                "max_channels": self.max_channels or top,
                "r1_gamma": self.r1_gamma
                if self.r1_gamma is not None
                else 0.0002 * self.image_size**2 / self.batch_size,
            }
        )

    def uses_amp(self) -> bool:
        """Whether this (resolved) config trains in mixed precision: asked for, and on CUDA."""
        return self.amp and torch.device(self.device or "cpu").type == "cuda"
