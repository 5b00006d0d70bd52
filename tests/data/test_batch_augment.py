"""Batched augmentation: the per-image transform's distributions, exact geometry, labels kept, seeded steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from dermasynth.data.transforms import (
    Augmentation,
    AugmentParams,
    BatchAugment,
    Preprocessing,
    hue_matrices,
    sample_crops,
    step_generator,
)

N = 4000


@pytest.mark.parametrize(("h", "w", "min_area"), [(64, 85, 0.6), (32, 32, 0.3), (40, 80, 0.6)])
def test_crops_follow_random_resized_crop(h: int, w: int, min_area: float) -> None:
    ours = sample_crops(torch.tensor([[h, w]] * N), min_area, torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(1)
    reference = []
    for _ in range(N):
        top, left, ch, cw = v2.RandomResizedCrop.get_params(torch.zeros(3, h, w), [min_area, 1.0], [0.8, 1.25])
        reference.append((top, left, ch, cw))
    ref = np.array(reference, dtype=np.float64)
    assert (ours[:, 0] + ours[:, 2] <= h).all() and (ours[:, 1] + ours[:, 3] <= w).all() and (ours >= 0).all()
    features = {
        "area": (ours[:, 2] * ours[:, 3], ref[:, 2] * ref[:, 3]),
        "aspect": (ours[:, 3] / ours[:, 2], ref[:, 3] / ref[:, 2]),
        "top share": (ours[:, 0] / np.maximum(h - ours[:, 2], 1), ref[:, 0] / np.maximum(h - ref[:, 2], 1)),
        "left share": (ours[:, 1] / np.maximum(w - ours[:, 3], 1), ref[:, 1] / np.maximum(w - ref[:, 3], 1)),
    }
    for name, (a, b) in features.items():
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name


def test_flips_rotations_and_colour_factors_are_uniform() -> None:
    aug = BatchAugment(Preprocessing(image_size=32), Augmentation(rotation_degrees=90, color_jitter=0.2))
    params = aug.sample(torch.tensor([[32, 42]] * N), torch.Generator().manual_seed(5))
    for flips in (params.hflip, params.vflip):
        assert abs(flips.float().mean().item() - 0.5) < 0.03
    assert stats.kstest(params.angle.numpy(), stats.uniform(-90, 180).cdf).pvalue > 1e-3
    for k in range(3):
        assert stats.kstest(params.colour[:, k].numpy(), stats.uniform(0.8, 0.4).cdf).pvalue > 1e-3
    assert stats.kstest(params.colour[:, 3].numpy(), stats.uniform(-0.05, 0.1).cdf).pvalue > 1e-3
    assert sorted(params.colour_order) == [0, 1, 2, 3]


def _params(
    n: int, crop: tuple[float, float, float, float], angle: float = 0, hflip: bool = False, vflip: bool = False
) -> AugmentParams:
    return AugmentParams(
        crop=torch.tensor([crop] * n, dtype=torch.float64),
        hflip=torch.full((n,), hflip),
        vflip=torch.full((n,), vflip),
        angle=torch.full((n,), float(angle), dtype=torch.float64),
        colour=torch.tensor([[1.0, 1.0, 1.0, 0.0]] * n, dtype=torch.float64),
        colour_order=[0, 1, 2, 3],
    )


def _plain(size: int) -> BatchAugment:
    pre = Preprocessing(image_size=size, mean=(0, 0, 0), std=(1, 1, 1))
    return BatchAugment(pre, Augmentation(color_jitter=0))


def test_geometry_matches_torchvision_crop_flip_rotate() -> None:
    pixels = torch.randint(0, 256, (2, 3, 16, 22), dtype=torch.uint8)
    aug = _plain(16)
    full = aug.apply(pixels, _params(2, (0, 3, 16, 16)))
    assert torch.allclose(full * 255, pixels[:, :, :, 3:19].float(), atol=1e-3)  # a same-size crop is a copy
    flipped = aug.apply(pixels, _params(2, (0, 3, 16, 16), hflip=True, vflip=True))
    assert torch.allclose(flipped, full.flip(2, 3), atol=1e-5)
    for angle in (90, -90, 180):
        rotated = aug.apply(pixels, _params(2, (0, 3, 16, 16), angle=angle))
        expected = v2.functional.rotate(pixels[:, :, :, 3:19], angle).float() / 255
        assert torch.allclose(rotated, expected, atol=1e-4), angle
    # a zoom is resized_crop's bilinear upscaling; only the outermost pixels differ (torchvision clamps at
    # the crop's edge, the batch path reads the real neighbours outside it)
    zoomed = aug.apply(pixels, _params(2, (2, 1, 8, 8)))
    expected = v2.functional.resized_crop(pixels.float(), 2, 1, 8, 8, [16, 16], antialias=False) / 255
    assert torch.allclose(zoomed[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)
    # at the canvas's edge the image's own border pixels are repeated, never black
    edge = aug.apply(torch.full((1, 3, 16, 16), 100, dtype=torch.uint8), _params(1, (0, 0, 8, 8)))
    assert torch.allclose(edge * 255, torch.full_like(edge, 100.0), atol=1e-3)


def test_rotation_leaves_black_corners_like_random_rotation() -> None:
    pixels = torch.full((1, 3, 16, 16), 200, dtype=torch.uint8)
    out = _plain(16).apply(pixels, _params(1, (0, 0, 16, 16), angle=45))
    assert out[0, :, 0, 0].abs().max() == 0 and out[0, :, 8, 8].min() > 0.7


def test_any_rotation_is_random_rotations_nearest_neighbour_one() -> None:
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for angle in (30.0, -137.0):
        rotated = _plain(32).apply(pixels, _params(2, (0, 0, 32, 32), angle=angle)) * 255
        expected = v2.functional.rotate(pixels, angle).float()  # NEAREST, black fill: RandomRotation's defaults
        same = torch.isclose(rotated, expected, atol=1e-3).float().mean().item()
        assert same > 0.97, (angle, same)  # pixel centres that fall exactly between two source pixels may differ
    # nearest-neighbour: a rotated two-tone image has only its two tones and the black corners, no blends
    board = torch.where((torch.arange(32)[:, None] + torch.arange(32)) % 2 == 0, 50, 200).to(torch.uint8)
    out = _plain(32).apply(board.expand(1, 3, 32, 32).contiguous(), _params(1, (0, 0, 32, 32), angle=30.0)) * 255
    assert set(out.round().unique().tolist()) == {0.0, 50.0, 200.0}


def test_hue_matrices_keep_grey_and_turn_a_full_circle() -> None:
    m = hue_matrices(torch.tensor([0.1, -0.2, 1.0]))
    grey = torch.tensor([0.4, 0.4, 0.4], dtype=torch.float64)
    assert torch.allclose(m @ grey, grey.expand(3, 3), atol=1e-6)
    assert torch.allclose(m[2], torch.eye(3, dtype=torch.float64), atol=1e-6)
    red = torch.tensor([0.8, 0.2, 0.2], dtype=torch.float64)
    assert not torch.allclose(m[0] @ red, red, atol=1e-2)


def test_labels_stay_with_their_images_and_steps_are_seeded() -> None:
    # each image is a flat colour that encodes its label; geometry and jitter keep the centre of that colour
    labels = torch.arange(8)
    pixels = (labels * 30 + 10).to(torch.uint8).view(8, 1, 1, 1).expand(8, 3, 24, 32).contiguous()
    extents = torch.tensor([[24, 32]] * 8)
    aug = BatchAugment(Preprocessing(image_size=24, mean=(0, 0, 0), std=(1, 1, 1)), Augmentation(color_jitter=0))
    out = aug(pixels, extents, step_generator(0, epoch=1, step=2))
    centre = (out[:, 0, 12, 12] * 255).round().long()
    assert torch.equal(centre, labels * 30 + 10)
    again = aug(pixels, extents, step_generator(0, epoch=1, step=2))
    other = aug(pixels.clone(), extents, step_generator(0, epoch=1, step=3))
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert not torch.equal(aug(pixels, extents, step_generator(0, epoch=1, step=2, rank=1)), out), (
        "each DDP rank has its own stream"
    )


def test_output_is_normalized_like_the_eval_transform() -> None:
    pre = Preprocessing(image_size=16)
    pixels = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = BatchAugment(pre, Augmentation(color_jitter=0)).apply(pixels, _params(4, (0, 0, 16, 16)))
    assert torch.allclose(out, pre.pixel_normalizer()(pixels), atol=1e-4)


def test_disabled_augmentation_is_refused() -> None:
    aug = BatchAugment(Preprocessing(image_size=16), Augmentation(enabled=False))
    with pytest.raises(ValueError, match="disabled"):
        aug(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.tensor([[16, 16]]), step_generator(0, 0, 0))


def test_step_generator_depends_only_on_its_inputs() -> None:
    a = torch.rand(4, generator=step_generator(7, 3, 11, 1))
    b = torch.rand(4, generator=step_generator(7, 3, 11, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.rand(4, generator=step_generator(7, 3, 12, 1)))
    assert math.isfinite(float(a.sum()))
