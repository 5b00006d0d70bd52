from __future__ import annotations

from typing import cast

import pytest
import torch
from torch import nn

from dermasynth.gan.networks import Discriminator, Generator, MinibatchStd, channels_at

SIZES = [16, 32, 64, 128, 256]
NUM_CLASSES = 7


def _nets(size: int) -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    g = Generator(NUM_CLASSES, size, z_dim=8, w_dim=16, channel_base=64, max_channels=8)
    d = Discriminator(NUM_CLASSES, size, channel_base=64, max_channels=8)
    return g, d


@pytest.mark.parametrize("size", SIZES)
def test_every_class_and_resolution_has_the_right_shapes(size: int) -> None:
    g, d = _nets(size)
    labels = torch.arange(NUM_CLASSES)
    with torch.no_grad():
        images = g(torch.randn(NUM_CLASSES, 8), labels)
        logits = d(images, labels)
        truncated = g(torch.randn(NUM_CLASSES, 8), labels, truncation=0.5)
    assert images.shape == truncated.shape == (NUM_CLASSES, 3, size, size)
    assert logits.shape == (NUM_CLASSES,)
    assert torch.isfinite(images).all() and torch.isfinite(logits).all()


def test_truncation_zero_gives_the_class_mean_image() -> None:
    g, _ = _nets(16)
    labels = torch.tensor([2, 2, 2, 5])
    with torch.no_grad():
        images = g(torch.randn(4, 8), labels, truncation=0.0)
    assert torch.allclose(images[0], images[1], atol=1e-5) and torch.allclose(images[0], images[2], atol=1e-5)
    assert not torch.allclose(images[0], images[3], atol=1e-3)  # another class, another centre


def test_the_label_changes_the_image_for_the_same_latent() -> None:
    g, d = _nets(16)
    z = torch.randn(1, 8).repeat(2, 1)
    with torch.no_grad():
        images = g(z, torch.tensor([0, 1]))
        logits = d(images[:1].repeat(2, 1, 1, 1), torch.tensor([0, 1]))
    assert not torch.allclose(images[0], images[1])
    assert logits[0] != logits[1]  # the projection term depends on the label


def test_bad_inputs_are_refused_with_what_is_accepted() -> None:
    g, d = _nets(16)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\]"):
        g(torch.randn(2, 8), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        g(torch.randn(2, 9), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="truncation must lie in"):
        g(torch.randn(2, 8), torch.tensor([0, 1]), truncation=1.5)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 3, 16, 16\)"):
        d(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="image_size 48 is not supported"):
        Generator(2, 48)


def test_discriminator_weights_are_spectrally_normalized() -> None:
    _, d = _nets(16)
    d.train()
    for _ in range(30):  # power iterations converge while the network runs
        d(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    weight = cast(nn.Linear, d.fc).weight.detach()  # the parametrized (normalized) weight
    assert torch.linalg.matrix_norm(weight, ord=2) == pytest.approx(1.0, abs=0.05)


def test_minibatch_std_adds_one_channel_for_any_batch() -> None:
    layer = MinibatchStd(4)
    for n in (1, 2, 3, 6, 8):
        assert layer(torch.randn(n, 5, 4, 4)).shape == (n, 6, 4, 4)


def test_channels_follow_the_base_and_the_cap() -> None:
    assert channels_at(4, 1024, 64) == 64
    assert channels_at(64, 1024, 64) == 16
    assert channels_at(256, 64, 8) == 4  # never fewer than 4
