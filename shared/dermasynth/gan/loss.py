"""The GAN objective as a strategy object with two named phases, after StyleGAN2-ADA's ``loss.py``.

* ``discriminator_phase``: real images against generated ones (hinge or non-saturating logistic
  loss), plus every ``r1_interval`` steps the R1 penalty ``gamma/2 * E[|grad_x D(x)|^2]`` on real
  images (lazy regularization: the penalty is scaled by the interval).
* ``generator_phase``: generated images judged by the discriminator.

Both phases augment every image the discriminator sees with the same differentiable pipeline. The
phases only compute losses; the training loop owns backward passes, optimizers and mixed precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dermasynth.gan.augment import AugmentPipeline
from dermasynth.gan.networks import Discriminator, Generator

LossKind = Literal["hinge", "nonsaturating"]


@dataclass
class PhaseResult:
    """The loss to back-propagate and the figures to log."""

    loss: Tensor
    stats: dict[str, float]


class GanLoss:
    """Losses of a class-conditional GAN.

    Args:
        generator: the generator being trained.
        discriminator: the discriminator being trained.
        augment: applied to every image the discriminator sees.
        kind: ``hinge`` or ``nonsaturating`` (logistic).
        r1_gamma: weight of the R1 penalty (0 disables it).
        r1_interval: the penalty is computed every this many discriminator steps.
        autocast: returns the mixed-precision context for forward passes (a null context on CPU);
            the R1 pass always runs in full precision.
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        augment: AugmentPipeline,
        *,
        kind: LossKind = "nonsaturating",
        r1_gamma: float = 0.0,
        r1_interval: int = 4,
        autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        if kind not in ("hinge", "nonsaturating"):
            raise ValueError(f"loss {kind!r} is not known; use 'hinge' or 'nonsaturating'")
        if r1_gamma < 0 or r1_interval < 1:
            raise ValueError(f"r1_gamma must be >= 0 and r1_interval >= 1, got {r1_gamma} and {r1_interval}")
        self.generator, self.discriminator, self.augment = generator, discriminator, augment
        self.kind, self.r1_gamma, self.r1_interval = kind, r1_gamma, r1_interval
        self.autocast = autocast

    def _judge(self, images: Tensor, labels: Tensor, rng: torch.Generator | None) -> Tensor:
        return self.discriminator(self.augment(images, rng), labels).float()

    def regularizes_at(self, step: int) -> bool:
        """Whether the discriminator phase of ``step`` (0-based) includes the R1 penalty."""
        return self.r1_gamma > 0 and step % self.r1_interval == 0

    def discriminator_phase(
        self, real: Tensor, labels: Tensor, z: Tensor, *, step: int, rng: torch.Generator | None = None
    ) -> PhaseResult:
        """Loss of the discriminator on a real batch and a generated batch of the same labels.

        Args:
            real: real images (N, 3, S, S) in [-1, 1].
            labels: their class indices (N,); the generated batch uses the same labels.
            z: latents for the generated batch (N, z_dim).
            step: the 0-based training step (decides whether R1 is computed).
            rng: the generator of every random draw of the augmentation.
        """
        with torch.no_grad(), self.autocast():
            fake = self.generator(z, labels)
        with self.autocast():
            fake_logits = self._judge(fake.detach(), labels, rng)
        regularize = self.regularizes_at(step)
        if regularize:
            real = real.detach().requires_grad_(True)
            real_logits = self._judge(real, labels, rng)  # full precision: R1 needs exact input gradients
        else:
            with self.autocast():
                real_logits = self._judge(real, labels, rng)
        self.augment.observe(real_logits)
        if self.kind == "hinge":
            loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        else:
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        stats = {
            "loss_d": float(loss.detach()),
            "real_logit": float(real_logits.detach().mean()),
            "fake_logit": float(fake_logits.detach().mean()),
        }
        if regularize:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3]).mean()
            loss = loss + penalty * (self.r1_gamma / 2 * self.r1_interval)
            stats["r1"] = float(penalty.detach())
        return PhaseResult(loss, stats)

    def generator_phase(self, labels: Tensor, z: Tensor, *, rng: torch.Generator | None = None) -> PhaseResult:
        """Loss of the generator: its images of ``labels`` from latents ``z``, as the discriminator sees them."""
        with self.autocast():
            fake = self.generator(z, labels)
            logits = self._judge(fake, labels, rng)
        loss = -logits.mean() if self.kind == "hinge" else F.softplus(-logits).mean()
        return PhaseResult(loss, {"loss_g": float(loss.detach())})
