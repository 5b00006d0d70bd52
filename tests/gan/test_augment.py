from __future__ import annotations

import pytest
import torch

from dermasynth.gan.augment import AdaptiveAugment, DiffAugment, NoAugment, build_augment
from tests.gan.conftest import tiny_config


def _images(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_changes_images_keeps_shape_and_passes_gradients(policy: str) -> None:
    x = _images().requires_grad_(True)
    y = DiffAugment(policy)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_is_reproducible_from_the_generator_state() -> None:
    x = _images()
    aug = DiffAugment()
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_translation_shifts_content_by_whole_pixels_with_zero_padding() -> None:
    x = torch.zeros(64, 3, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    y = DiffAugment("translation")(x, torch.Generator().manual_seed(0))
    assert torch.equal(y.sum(dim=[1, 2, 3]), torch.full((64,), 3.0))  # moved, never blurred or lost
    assert (y.flatten(1).argmax(dim=1) != x.flatten(1).argmax(dim=1)).any()


def test_cutout_erases_a_quarter_of_the_image() -> None:
    y = DiffAugment("cutout")(torch.ones(16, 3, 16, 16), torch.Generator().manual_seed(0))
    erased = (y[:, 0] == 0).float().mean(dim=[1, 2])
    assert torch.all(erased > 0) and torch.all(erased <= 0.25 + 1e-6)


def test_ada_probability_rises_when_the_discriminator_overfits_and_falls_otherwise() -> None:
    ada = AdaptiveAugment(target=0.6, interval=2, speed_images=100)
    for _ in range(4):
        ada.observe(torch.ones(10))  # sign(D(real)) = 1 > 0.6: overfitting
        ada.adjust(batch_size=10)
    high = ada.probability
    assert high == pytest.approx(0.4)
    for _ in range(2):
        ada.observe(-torch.ones(10))
        ada.adjust(batch_size=10)
    assert ada.probability == pytest.approx(high - 0.2)
    restored = AdaptiveAugment()
    restored.load_state_dict(ada.state_dict())
    assert restored.probability == ada.probability


def test_ada_is_the_identity_at_p_zero_and_augments_at_p_one() -> None:
    x = _images()
    ada = AdaptiveAugment(initial_p=0.0)
    assert torch.equal(ada(x, torch.Generator().manual_seed(0)), x)
    ada.p.fill_(1.0)
    xg = x.clone().requires_grad_(True)
    y = ada(xg, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_build_augment_follows_the_config() -> None:
    assert isinstance(build_augment(tiny_config(augment="diffaugment")), DiffAugment)
    assert isinstance(build_augment(tiny_config(augment="ada")), AdaptiveAugment)
    assert isinstance(build_augment(tiny_config(augment="none")), NoAugment)
    with pytest.raises(ValueError, match="holds \\['blur'\\]"):
        tiny_config(diffaugment_policy="color,blur")
