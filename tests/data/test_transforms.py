from __future__ import annotations

import torch
from PIL import Image

from dermasynth.data.transforms import Augmentation, Preprocessing


def test_eval_transform_shape_and_normalization() -> None:
    pre = Preprocessing(image_size=32)
    x = pre.eval_transform()(Image.new("RGB", (200, 150), (124, 116, 104)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, torch.zeros_like(x), atol=0.02)  # ImageNet mean colour -> ~0
    assert torch.allclose(pre.denormalize(x), torch.tensor([124, 116, 104]).view(3, 1, 1) / 255, atol=0.01)


def test_center_crop_keeps_the_middle() -> None:
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 5, 30))  # a blue band at the left edge, outside the central square
    x = Preprocessing(image_size=30, mean=(0, 0, 0), std=(1, 1, 1)).eval_transform()(img)
    assert x[2].max() < 0.05


def test_train_transform_is_random_and_same_shape() -> None:
    pre = Preprocessing(image_size=24)
    img = Image.effect_mandelbrot((80, 60), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    torch.manual_seed(0)
    t = pre.train_transform()
    a, b = t(img), t(img)
    assert a.shape == b.shape == (3, 24, 24)
    assert not torch.equal(a, b)
    off = pre.train_transform(Augmentation(enabled=False))
    assert torch.equal(off(img), pre.eval_transform()(img))


def test_preprocessing_round_trips_through_json() -> None:
    pre = Preprocessing(image_size=64, crop="none")
    assert Preprocessing.model_validate_json(pre.model_dump_json()) == pre


def test_pixels_then_normalizer_equal_the_eval_transform() -> None:
    img = Image.effect_mandelbrot((80, 60), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    for crop in ("center", "none"):
        pre = Preprocessing(image_size=24, crop=crop)
        pixels = pre.pixels_transform()(img)
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 24, 24)
        normalized = pre.pixel_normalizer()(pixels.unsqueeze(0))[0]
        assert torch.allclose(normalized, pre.eval_transform()(img), atol=1e-6)
