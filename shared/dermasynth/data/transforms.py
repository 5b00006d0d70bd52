"""The one preprocessing definition shared by training, export and serving, plus training augmentation.

A :class:`Preprocessing` is saved inside every checkpoint and exported model, so the serving path
rebuilds exactly the transform the model was trained with.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocessing(BaseModel):
    """Resize, crop policy and normalization of a model's input.

    ``crop="center"`` resizes the shorter side to ``image_size`` and cuts the central square
    (HAM10000 images are 4:3, the lesion sits in the middle); ``crop="none"`` squashes the whole
    image to a square.
    """

    model_config = ConfigDict(frozen=True)

    image_size: int = Field(default=224, ge=16, le=1024)
    crop: Literal["center", "none"] = "center"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def _geometry(self) -> list[v2.Transform]:
        size = self.image_size
        if self.crop == "center":
            return [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        return [v2.Resize((size, size), antialias=True)]

    def _to_tensor(self) -> list[v2.Transform]:
        return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def eval_transform(self) -> v2.Compose:
        """PIL RGB image -> normalized float tensor (3, S, S): what validation, export and serving use."""
        return v2.Compose([*self._geometry(), *self._to_tensor()])

    def pixels_transform(self) -> v2.Compose:
        """PIL RGB image -> uint8 tensor (3, S, S): the eval geometry without scaling or normalization.

        Serving sends these pixels (a quarter of the bytes of floats) and the exported model starts with
        :meth:`pixel_normalizer`, so ``pixel_normalizer()(pixels_transform(img))`` equals ``eval_transform(img)``.
        """
        return v2.Compose([*self._geometry(), v2.PILToTensor()])

    def pixel_normalizer(self) -> PixelNormalize:
        """The scaling and normalization of :meth:`eval_transform` as a module over uint8 batches."""
        return PixelNormalize(self.mean, self.std)

    def train_transform(self, augment: Augmentation | None = None) -> v2.Compose:
        """The eval transform's geometry with random zoom, flips, rotation and colour jitter."""
        aug = augment or Augmentation()
        if not aug.enabled:
            return self.eval_transform()
        size = self.image_size
        steps: list[v2.Transform] = [
            v2.Resize(size, antialias=True),
            v2.RandomResizedCrop(size, scale=(aug.min_zoom_area, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
        ]
        if aug.rotation_degrees > 0:
            steps.append(v2.RandomRotation(aug.rotation_degrees))
        if aug.color_jitter > 0:
            j = aug.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
        return v2.Compose([*steps, *self._to_tensor()])

    def denormalize(self, batch: torch.Tensor) -> torch.Tensor:
        """Undo the normalization: back to [0, 1] pixels (for figures and Grad-CAM overlays)."""
        mean = torch.tensor(self.mean, device=batch.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(-1, 1, 1)
        return (batch * std + mean).clamp(0, 1)


class PixelNormalize(nn.Module):
    """uint8 pixels (N, 3, S, S) -> normalized floats, as ``ToDtype(scale=True)`` then ``Normalize`` do.

    A module (mean and std are buffers), so it moves between devices and exports with the model.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.to(torch.float32) * (1.0 / 255.0) - self.mean) / self.std


class Augmentation(BaseModel):
    """Training-time augmentation. Dermoscopy has no up or down, so flips and any rotation are fair."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    min_zoom_area: float = Field(default=0.6, gt=0, le=1)
    rotation_degrees: float = Field(default=180.0, ge=0, le=180)
    color_jitter: float = Field(default=0.15, ge=0, le=1)
