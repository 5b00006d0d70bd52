from __future__ import annotations

import pytest
import torch

from dermasynth.gan.augment import NoAugment
from dermasynth.gan.loss import GanLoss
from dermasynth.gan.networks import Discriminator, Generator


def _loss(kind: str, gamma: float = 1.0) -> GanLoss:
    torch.manual_seed(0)
    g = Generator(2, 16, z_dim=8, w_dim=16, channel_base=64, max_channels=8)
    d = Discriminator(2, 16, channel_base=64, max_channels=8)
    return GanLoss(g, d, NoAugment(), kind=kind, r1_gamma=gamma, r1_interval=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["hinge", "nonsaturating"])
def test_phases_give_finite_losses_and_r1_only_on_its_interval(kind: str) -> None:
    loss = _loss(kind)
    real, labels, z = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1]), torch.randn(4, 8)
    with_r1 = loss.discriminator_phase(real, labels, z, step=0)
    without = loss.discriminator_phase(real, labels, z, step=1)
    assert "r1" in with_r1.stats and with_r1.stats["r1"] > 0 and "r1" not in without.stats
    assert torch.isfinite(with_r1.loss) and torch.isfinite(without.loss)
    gen = loss.generator_phase(labels, z)
    assert torch.isfinite(gen.loss) and set(gen.stats) == {"loss_g"}


def test_at_initialization_the_losses_sit_at_their_chance_values() -> None:
    real, labels, z = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1]), torch.randn(4, 8)
    ns = _loss("nonsaturating", gamma=0.0).discriminator_phase(real, labels, z, step=1)
    assert ns.loss.item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), abs=0.2)
    hinge = _loss("hinge", gamma=0.0).discriminator_phase(real, labels, z, step=1)
    assert hinge.loss.item() == pytest.approx(2.0, abs=0.3)


def test_r1_gradient_reaches_the_discriminator_but_not_the_generator() -> None:
    loss = _loss("nonsaturating", gamma=10.0)
    real, labels, z = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1]), torch.randn(4, 8)
    loss.discriminator_phase(real, labels, z, step=0).loss.backward()
    assert all(p.grad is not None for p in loss.discriminator.parameters())
    assert all(p.grad is None for p in loss.generator.parameters())


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="loss 'wasserstein' is not known"):
        _loss("wasserstein")
    with pytest.raises(ValueError, match="r1_gamma must be >= 0"):
        _loss("hinge", gamma=-1.0)
