"""The one preprocessing definition shared by training, export and serving, plus training augmentation.

A :class:`Preprocessing` is saved inside every checkpoint and exported model, so the serving path
rebuilds exactly the transform the model was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
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


# -- batched augmentation on the training device (issue 13) ---------------------------------------------

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries this often before its fallback
_CROP_RATIO = (0.8, 1.25)


def step_generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, rank, epoch, step): a step's draws depend on nothing else.

    Resume (which restarts at an epoch boundary) and each DDP rank get exactly the stream an
    uninterrupted run would have had, whatever ran before.
    """
    state = np.random.SeedSequence([seed, rank, epoch, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one batch (CPU tensors, length B): what :class:`BatchAugment` applies.

    ``crop`` rows are (top, left, height, width) in canvas pixels; ``angle`` is in degrees
    (counter-clockwise); ``colour`` rows are (brightness, contrast, saturation, hue) factors and
    ``colour_order`` the order (a permutation of 0..3) the four are applied in, one order per batch.
    """

    crop: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor
    angle: torch.Tensor
    colour: torch.Tensor
    colour_order: list[int]


def sample_crops(extents: torch.Tensor, min_area: float, generator: torch.Generator) -> torch.Tensor:
    """``RandomResizedCrop.get_params`` for a batch: (B, 4) (top, left, height, width) within each extent.

    Per sample: up to 10 tries of an area share uniform in [min_area, 1] and an aspect ratio log-uniform
    in [0.8, 1.25]; the first that fits is placed uniformly; if none fits, torchvision's fallback (the
    largest centred crop with a ratio in range).
    """
    n = extents.shape[0]
    h = extents[:, 0].double()
    w = extents[:, 1].double()
    area = (h * w)[:, None]
    target = area * torch.empty(n, _CROP_ATTEMPTS, dtype=torch.float64).uniform_(min_area, 1.0, generator=generator)
    log_lo, log_hi = math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1])
    aspect = torch.exp(
        torch.empty(n, _CROP_ATTEMPTS, dtype=torch.float64).uniform_(log_lo, log_hi, generator=generator)
    )
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    fits = (cw > 0) & (cw <= w[:, None]) & (ch > 0) & (ch <= h[:, None])
    first = torch.where(fits.any(1), fits.int().argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0)[:, None]
    ch_pick, cw_pick = ch.gather(1, pick)[:, 0], cw.gather(1, pick)[:, 0]
    u = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    top = torch.floor(u[:, 0] * (h - ch_pick + 1))
    left = torch.floor(u[:, 1] * (w - cw_pick + 1))
    # fallback, as torchvision: whole image, narrowed to the nearest allowed ratio, centred
    ratio = w / h
    fb_w = torch.where(
        ratio < _CROP_RATIO[0], w, torch.where(ratio > _CROP_RATIO[1], torch.round(h * _CROP_RATIO[1]), w)
    )
    fb_h = torch.where(ratio < _CROP_RATIO[0], torch.round(w / _CROP_RATIO[0]), h)
    fallback = first < 0
    ch_pick = torch.where(fallback, fb_h, ch_pick)
    cw_pick = torch.where(fallback, fb_w, cw_pick)
    top = torch.where(fallback, torch.div(h - fb_h, 2, rounding_mode="floor"), top)
    left = torch.where(fallback, torch.div(w - fb_w, 2, rounding_mode="floor"), left)
    return torch.stack([top, left, ch_pick, cw_pick], dim=1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)


def hue_matrices(shift: torch.Tensor) -> torch.Tensor:
    """Per-sample 3x3 RGB maps rotating the hue by ``shift`` turns (in [-0.5, 0.5]): a rotation of YIQ's chroma plane.

    The linear hue rotation GPU pipelines use (NVIDIA DALI's ``hue``): one small matrix product per
    image instead of ``adjust_hue``'s RGB -> HSV -> RGB round trip (which costs more than the rest of
    the augmentation together on a CPU). For the small shifts of training jitter both turn colours
    around the same axis by the same angle; they differ in how saturated colours are clipped.
    """
    angle = shift.double() * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(shift.shape[0], 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ


class BatchAugment:
    """The per-image train transform's random zoom, flips, rotation and colour jitter, on whole batches.

    Input: train-geometry uint8 pixels ``(B, 3, S, W)`` (see :mod:`dermasynth.data.decoded_cache`) and
    each image's (height, width) on that canvas; output: normalized floats ``(B, 3, S, S)`` on the
    pixels' device (CUDA or CPU). Every sample has its own parameters, drawn from a CPU generator (see
    :func:`step_generator`), so the result is the same on any device and after a resume.

    The random resized crop and both flips are one affine map per sample, applied by a bilinear
    ``grid_sample``; the rotation is a second, nearest-neighbour one whose uncovered corners are black, as
    with ``RandomRotation`` (its default interpolation), so the images are as sharp as the per-image ones. Colour
    jitter follows ``ColorJitter`` (brightness, contrast, saturation, hue with its factor ranges, in a
    random order), with one order per batch rather than per image, and the hue turned by a linear YIQ
    rotation (see :func:`hue_matrices`) rather than through HSV.
    """

    def __init__(self, preprocessing: Preprocessing, augment: Augmentation | None = None) -> None:
        self.preprocessing = preprocessing
        self.augment = augment or Augmentation()
        self._normalize = preprocessing.pixel_normalizer()

    def sample(self, extents: torch.Tensor, generator: torch.Generator) -> AugmentParams:
        """Draw one batch's parameters."""
        aug, n = self.augment, extents.shape[0]
        crop = sample_crops(extents, aug.min_zoom_area, generator)
        flips = torch.rand(n, 2, generator=generator) < 0.5
        angle = torch.empty(n, dtype=torch.float64).uniform_(
            -aug.rotation_degrees, aug.rotation_degrees, generator=generator
        )
        j = aug.color_jitter
        colour = torch.empty(n, 4, dtype=torch.float64)
        colour[:, :3].uniform_(max(0.0, 1 - j), 1 + j, generator=generator)
        colour[:, 3].uniform_(-min(j / 4, 0.5), min(j / 4, 0.5), generator=generator)
        order = torch.randperm(4, generator=generator).tolist()
        return AugmentParams(crop, flips[:, 0], flips[:, 1], angle, colour, order)

    def __call__(self, pixels: torch.Tensor, extents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.augment.enabled:
            raise ValueError("augmentation is disabled; train on the eval-geometry pixels instead")
        return self.apply(pixels, self.sample(extents, generator))

    def apply(self, pixels: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply drawn parameters to a batch (uint8 ``(B, 3, H, W)`` on any device)."""
        device = pixels.device
        n, _, height, width = pixels.shape
        s = self.preprocessing.image_size
        f = torch.nn.functional
        # 1. crop window + flips, resized to s x s by bilinear sampling (RandomResizedCrop, then the flips,
        #    which map pixel centres onto pixel centres); grid coordinates in [-1, 1]
        sx = 1.0 - 2.0 * params.hflip.double()
        sy = 1.0 - 2.0 * params.vflip.double()
        flips = torch.zeros(n, 2, 3, dtype=torch.float64)
        flips[:, 0, 0], flips[:, 1, 1] = sx, sy
        window = f.affine_grid(flips.float().to(device), [n, 1, s, s], align_corners=False)
        # crop window -> the canvas's normalized coordinates: x = (left + (u + 1) / 2 * cw) * 2 / W - 1
        top, left, ch, cw = params.crop.double().unbind(1)
        scale = torch.stack([cw / width, ch / height], dim=1)
        offset = torch.stack([(2 * left + cw) / width - 1, (2 * top + ch) / height - 1], dim=1)
        grid = torch.addcmul(
            offset.float().to(device).view(n, 1, 1, 2), window, scale.float().to(device).view(n, 1, 1, 2)
        )
        images = f.grid_sample(pixels.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        # 2. rotation about the centre by nearest-neighbour sampling, uncovered corners black: RandomRotation's
        #    defaults. Folded into the bilinear pass, it left the training images blurrier than the per-image
        #    path's (bench/augment_sharpness.py at 64 px: 0.0168 against 0.0184; now 0.0181; eval images 0.0199)
        theta = torch.deg2rad(params.angle)
        cos, sin = torch.cos(theta), torch.sin(theta)
        rotation = torch.zeros(n, 2, 3, dtype=torch.float64)
        rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
        grid = f.affine_grid(rotation.float().to(device), [n, 1, s, s], align_corners=False)
        images = f.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        images = images.mul_(1.0 / 255.0)
        if self.augment.color_jitter > 0:
            images = self._jitter(images, params.colour.float().to(device), params.colour_order)
        return self._standardize(images)

    def _standardize(self, images: torch.Tensor) -> torch.Tensor:
        norm = self._normalize
        mean, std = norm.mean.to(images.device), norm.std.to(images.device)
        return images.sub_(mean).div_(std)

    @staticmethod
    def _jitter(x: torch.Tensor, factors: torch.Tensor, order: list[int]) -> torch.Tensor:
        n = x.shape[0]
        for op in order:
            f = factors[:, op].view(n, 1, 1, 1)
            if op == 0:
                x = (x * f).clamp_(0, 1)
            elif op == 1:
                mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
                x = (f * x + (1 - f) * mean).clamp_(0, 1)
            elif op == 2:
                x = (f * x + (1 - f) * _gray(x)).clamp_(0, 1)
            else:
                matrices = hue_matrices(factors[:, 3].cpu()).to(x.device, x.dtype)
                x = torch.bmm(matrices, x.flatten(2)).view_as(x).clamp_(0, 1)
        return x
