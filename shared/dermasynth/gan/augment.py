"""Differentiable augmentation of everything the discriminator sees, so small classes do not collapse.

With ~100 images of a class (HAM10000's df and vasc) a discriminator memorizes them within a few
thousand steps and the generator collapses. Both remedies here augment real *and* generated images
before the discriminator, with differentiable operations so the generator's gradients pass through:

* :class:`DiffAugment` (Zhao et al., 2020): colour (brightness, saturation, contrast), translation
  and cutout, always applied.
* :class:`AdaptiveAugment` (after StyleGAN2-ADA, Karras et al., 2020): flips, 90-degree rotations,
  integer translation, isotropic scaling, rotation, brightness, contrast and saturation, each applied
  to a sample with probability ``p``; ``p`` rises while the discriminator is overconfident on real
  images (``E[sign(D(real))]`` above the target) and falls otherwise.

Every random draw uses the ``generator`` passed in, so a run with saved generator states resumes exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dermasynth.gan.config import DIFFAUGMENT_OPS, GanConfig


def _rand(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=x.device, generator=generator)


def _randn(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, device=x.device, generator=generator)


class AugmentPipeline(nn.Module):
    """Base class: ``forward(images, generator)`` augments; the hooks let an adaptive pipeline tune itself."""

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return images

    @property
    def probability(self) -> float:
        """How strongly images are augmented now (1.0 for always-on pipelines, 0.0 for none)."""
        return 0.0

    def observe(self, real_logits: Tensor) -> None:
        """Take note of the discriminator's logits on real images (used by adaptive pipelines)."""

    def adjust(self, batch_size: int) -> None:
        """Called once per training step after the discriminator update."""


class NoAugment(AugmentPipeline):
    """The identity: the discriminator sees images as they are."""


class DiffAugment(AugmentPipeline):
    """DiffAugment's colour, translation and cutout, on images in [-1, 1].

    Args:
        policy: comma-separated subset of ``color``, ``translation``, ``cutout``.
        translation_ratio: largest shift, as a fraction of the image side (zero padding).
        cutout_ratio: side of the erased square, as a fraction of the image side.
    """

    def __init__(
        self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125, cutout_ratio: float = 0.5
    ) -> None:
        super().__init__()
        self.ops = [op.strip() for op in policy.split(",") if op.strip()]
        unknown = [op for op in self.ops if op not in DIFFAUGMENT_OPS]
        if unknown:
            raise ValueError(f"DiffAugment policy {policy!r} holds {unknown}; use {', '.join(DIFFAUGMENT_OPS)}")
        self.translation_ratio, self.cutout_ratio = translation_ratio, cutout_ratio

    @property
    def probability(self) -> float:
        return 1.0 if self.ops else 0.0

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = images
        for op in self.ops:
            if op == "color":
                x = self._color(x, generator)
            elif op == "translation":
                x = self._translation(x, generator)
            else:
                x = self._cutout(x, generator)
        return x

    @staticmethod
    def _color(x: Tensor, generator: torch.Generator | None) -> Tensor:
        n = x.shape[0]
        x = x + (_rand(n, x, generator) - 0.5).view(n, 1, 1, 1).to(x.dtype)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(n, x, generator) * 2).view(n, 1, 1, 1).to(x.dtype) + mean
        mean = x.mean(dim=[1, 2, 3], keepdim=True)
        return (x - mean) * (_rand(n, x, generator) + 0.5).view(n, 1, 1, 1).to(x.dtype) + mean

    def _translation(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = x.shape
        shift = int(h * self.translation_ratio + 0.5)
        if shift == 0:
            return x
        dy = torch.randint(-shift, shift + 1, (n,), device=x.device, generator=generator)
        dx = torch.randint(-shift, shift + 1, (n,), device=x.device, generator=generator)
        rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None]).clamp(-1, h)  # (n, h); -1 and h: padding
        cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None]).clamp(-1, w)
        padded = F.pad(x, [1, 1, 1, 1])
        index_rows = (rows + 1)[:, None, :, None].expand(n, x.shape[1], h, w + 2)
        x = padded.gather(2, index_rows)
        index_cols = (cols + 1)[:, None, None, :].expand(n, x.shape[1], h, w)
        return x.gather(3, index_cols)

    def _cutout(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = x.shape
        size_h, size_w = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        cy = torch.randint(0, h + (1 - size_h % 2), (n,), device=x.device, generator=generator)
        cx = torch.randint(0, w + (1 - size_w % 2), (n,), device=x.device, generator=generator)
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        inside_y = (ys >= (cy - size_h // 2)[:, None]) & (ys < (cy - size_h // 2 + size_h)[:, None])
        inside_x = (xs >= (cx - size_w // 2)[:, None]) & (xs < (cx - size_w // 2 + size_w)[:, None])
        keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
        return x * keep[:, None].to(x.dtype)


class AdaptiveAugment(AugmentPipeline):
    """StyleGAN2-ADA-style augmentation whose probability ``p`` follows the discriminator's overfitting.

    Args:
        target: the wanted ``E[sign(D(real))]``; above it ``p`` rises, below it ``p`` falls.
        interval: steps between adjustments of ``p``.
        speed_images: number of real images over which ``p`` can travel from 0 to 1.
        initial_p: the starting probability.
    """

    p: Tensor
    sign_sum: Tensor
    sign_count: Tensor
    steps_seen: Tensor

    def __init__(
        self, target: float = 0.6, interval: int = 4, speed_images: int = 100_000, initial_p: float = 0.0
    ) -> None:
        super().__init__()
        if not 0 < target < 1:
            raise ValueError(f"ADA target must lie in (0, 1), got {target}")
        self.target, self.interval, self.speed_images = target, interval, speed_images
        self.register_buffer("p", torch.tensor(float(initial_p)))
        self.register_buffer("sign_sum", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("sign_count", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("steps_seen", torch.tensor(0, dtype=torch.int64))

    @property
    def probability(self) -> float:
        return float(self.p)

    def observe(self, real_logits: Tensor) -> None:
        self.sign_sum += real_logits.detach().sign().sum().double().to(self.sign_sum.device)
        self.sign_count += real_logits.numel()

    def adjust(self, batch_size: int) -> None:
        self.steps_seen += 1
        if int(self.steps_seen) % self.interval or int(self.sign_count) == 0:
            return
        overfit = float(self.sign_sum / self.sign_count)
        step = batch_size * self.interval / self.speed_images
        self.p.copy_((self.p + math.copysign(step, overfit - self.target)).clamp(0.0, 1.0))
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = float(self.p)
        if p <= 0:
            return images
        x = self._geometric(images, p, generator)
        return self._color(x, p, generator)

    @staticmethod
    def _chosen(n: int, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        return (_rand(n, x, generator) < p).to(torch.float32)

    def _geometric(self, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        n, _, h, _ = x.shape
        dev = x.device
        eye = torch.eye(3, device=dev).repeat(n, 1, 1)

        def chosen() -> Tensor:
            return self._chosen(n, x, p, generator)

        flip = 1 - 2 * (torch.floor(_rand(n, x, generator) * 2) * chosen())
        flip_m = eye.clone()
        flip_m[:, 0, 0] = flip
        quarter = torch.floor(_rand(n, x, generator) * 4) * chosen() * (math.pi / 2)
        shifted = chosen()  # integer translation by up to 1/8 of the side, both axes at once
        shift_x = torch.round((_rand(n, x, generator) * 2 - 1) * 0.125 * h) * 2 / h * shifted
        shift_y = torch.round((_rand(n, x, generator) * 2 - 1) * 0.125 * h) * 2 / h * shifted
        scale = torch.exp2(_randn(n, x, generator) * 0.2 * chosen())
        angle = (_rand(n, x, generator) * 2 - 1) * math.pi * chosen()
        matrix = flip_m @ _rotation(quarter, eye) @ _translation(shift_x, shift_y, eye) @ _scale(scale, eye)
        matrix = matrix @ _rotation(angle, eye)
        if torch.equal(matrix, eye):
            return x
        grid = F.affine_grid(matrix[:, :2, :].to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _color(self, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        n = x.shape[0]

        def chosen() -> Tensor:
            return self._chosen(n, x, p, generator)

        brightness = _randn(n, x, generator) * 0.2 * chosen()
        contrast = torch.exp2(_randn(n, x, generator) * 0.5 * chosen())
        saturation = torch.exp2(_randn(n, x, generator) * chosen())
        x = (x + brightness.view(n, 1, 1, 1).to(x.dtype)) * contrast.view(n, 1, 1, 1).to(x.dtype)
        luma = x.mean(dim=1, keepdim=True)
        return luma + (x - luma) * saturation.view(n, 1, 1, 1).to(x.dtype)


def _rotation(angle: Tensor, eye: Tensor) -> Tensor:
    m = eye.clone()
    cos, sin = torch.cos(angle), torch.sin(angle)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _translation(tx: Tensor, ty: Tensor, eye: Tensor) -> Tensor:
    m = eye.clone()
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale(s: Tensor, eye: Tensor) -> Tensor:
    m = eye.clone()
    m[:, 0, 0], m[:, 1, 1] = s, s
    return m


def build_augment(config: GanConfig) -> AugmentPipeline:
    """The pipeline a config asks for."""
    if config.augment == "diffaugment":
        return DiffAugment(config.diffaugment_policy)
    if config.augment == "ada":
        return AdaptiveAugment(config.ada_target, config.ada_interval, config.ada_speed_images)
    return NoAugment()
