from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.manifest import Manifest, Record
from dermasynth.gan.artifacts import load_generator
from dermasynth.gan.features import FEATURE_RUN, feature_classifier
from dermasynth.gan.quality import (
    evaluate_gan,
    evaluation_seeds,
    fid_kid,
    near_copy_threshold,
    nearest_real,
    precision_recall,
)
from dermasynth.gan.sampling import generate, png_bytes
from dermasynth.storage import FilesystemStore

POOLED = "4x4 average-pooled pixels and per-channel standard deviations"


def pooled_pixels(images: torch.Tensor) -> torch.Tensor:
    """A simple, fixed feature space: coarse layout and colour spread of each image."""
    return torch.cat([F.adaptive_avg_pool2d(images, 4).flatten(1), images.std(dim=[2, 3])], dim=1)


def _gauss(n: int, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed)) + shift


def test_fid_and_kid_are_near_zero_for_one_distribution_and_grow_with_a_shift() -> None:
    same = fid_kid(_gauss(300, seed=1), _gauss(300, seed=2))
    shifted = fid_kid(_gauss(300, seed=1), _gauss(300, 1.0, seed=2))
    assert same[0] < 0.5 and abs(same[1]) < 0.05
    assert shifted[0] > 5 and shifted[1] > 0.5
    assert shifted[3] == 150  # KID subsets of half the images, so that they differ
    with pytest.raises(ValueError, match="at least 2 feature rows"):
        fid_kid(_gauss(1), _gauss(5))


def test_precision_and_recall_separate_fidelity_from_coverage() -> None:
    real = _gauss(200, seed=1)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    far = precision_recall(real, _gauss(200, 50.0, seed=2))
    assert far == (0.0, 0.0)
    collapsed = real[:1].repeat(50, 1) + 0.01 * _gauss(50, seed=3)  # every sample next to one real point
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    with pytest.raises(ValueError, match="needs more than 3 rows"):
        precision_recall(real[:3], real)


def test_near_copy_threshold_ignores_views_of_the_same_lesion() -> None:
    base = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images = torch.cat([base, base[:1]])  # the fifth image repeats the first: same lesion, another view
    labels = torch.zeros(5, dtype=torch.long)
    with_views = near_copy_threshold(images, ["a", "b", "c", "d", "a"], labels, 0.01)
    assert with_views > 0.1  # the exact repeat does not count: it is the same lesion
    assert near_copy_threshold(images, ["a", "b", "c", "d", "e"], labels, 0.01) < with_views
    with pytest.raises(ValueError, match="at least two lesions"):
        near_copy_threshold(images, ["a"] * 5, labels, 0.01)


def test_a_copy_is_near_one_lesion_while_a_featureless_image_is_near_all_of_them() -> None:
    rng = torch.Generator().manual_seed(0)
    skin = torch.tensor([200, 150, 140], dtype=torch.float32).view(1, 3, 1, 1)
    real = (skin + torch.randn(6, 3, 16, 16, generator=rng) * 20).clamp(0, 255).to(torch.uint8)  # textured skin
    plain = skin.expand(1, 3, 16, 16).to(torch.uint8)  # the mean image: close to every real image
    copy = real[2:3]
    nearest, which, ratio = nearest_real(torch.cat([plain, copy]), real, ["a", "b", "c", "d", "e", "f"])
    assert int(which[1]) == 2 and float(nearest[1]) == 0.0 and float(ratio[1]) == 0.0
    assert float(ratio[0]) > 0.8  # about as near to its second lesion as to its first: not a copy
    _, _, alone = nearest_real(copy, real, ["a"] * 6)
    assert torch.isinf(alone).all()  # one lesion only: no ratio


def test_evaluate_gan_reports_every_class_and_writes_json_and_grids(
    tiny_gan: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    gan_dir = tmp_path / "gan"
    shutil.copytree(tiny_gan, gan_dir)
    store = FilesystemStore(gan_dir)
    report = evaluate_gan(store, demo_dataset, pooled_pixels, feature_space=POOLED, samples_per_class=10)
    trained = load_generator(store, "cpu")
    assert list(report.classes) == trained.classes and report.generator_id == trained.generator_id
    real_train = demo_dataset.class_counts("train")
    for label, quality in report.classes.items():
        assert quality.real_images == real_train[label] and quality.generated_images == 10
        assert quality.kid_subset_size == max(2, min(10, real_train[label]) // 2)
        assert quality.fid is not None and quality.fid >= 0
        assert quality.nearest_real_rmse_min > 0
    assert report.feature_space == POOLED and report.mean_fid is not None
    assert json.loads(store.get_bytes("gan_report.json"))["generator_id"] == trained.generator_id
    assert {f"evaluation/samples/{c}.png" for c in trained.classes} <= set(store.list("evaluation/"))
    assert set(report.grids) == set(store.list("evaluation/"))
    with pytest.raises(ValueError, match="feature_space must describe"):
        evaluate_gan(store, demo_dataset, pooled_pixels)


def test_a_gan_that_reproduces_its_training_images_is_flagged(tiny_gan: Path, tmp_path: Path) -> None:
    """The training images here ARE the generator's images: every generated image is a near-copy."""
    trained = load_generator(FilesystemStore(tiny_gan), "cpu")
    records = []
    for index, label in enumerate(trained.classes[:3]):
        seeds = evaluation_seeds(0, label, 6)
        (images,) = generate(trained.generator, [index] * 6, seeds, batch_size=6)
        for i, image in enumerate(images):
            data = png_bytes(image)
            name = f"images/{label}_{i}.png"
            (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / name).write_bytes(data)
            records.append(
                Record(
                    image=name,
                    label=label,
                    lesion_id=f"{label}_{i}",
                    split="train",
                    source="generated",
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
    manifest = Manifest(records, tmp_path / "data")
    gan_dir = tmp_path / "gan"
    shutil.copytree(tiny_gan, gan_dir)
    report = evaluate_gan(FilesystemStore(gan_dir), manifest, pooled_pixels, feature_space=POOLED)
    assert report.near_copies == 18
    for label in trained.classes[:3]:
        quality = report.classes[label]
        assert quality.near_copies == 6 and quality.nearest_real_rmse_min == 0.0
        assert {c.nearest_real for c in quality.near_copy_examples} <= {r.image for r in records}


def test_the_default_feature_space_is_a_classifier_trained_once_on_real_images(
    tiny_gan: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    gan_dir = tmp_path / "gan"
    shutil.copytree(tiny_gan, gan_dir)
    store = FilesystemStore(gan_dir)
    config = TrainConfig(
        model="resnet18", image_size=32, epochs=1, batch_size=32, num_workers=0, max_steps_per_epoch=2, device="cpu"
    )
    space = feature_classifier(store, demo_dataset, 16, config)
    assert "resnet18" in space.description and "real training images" in space.description
    assert space.extract(torch.rand(3, 3, 16, 16)).shape == (3, 512)
    result_key = f"{FEATURE_RUN}/result.json"
    stamp = (gan_dir / result_key).stat().st_mtime_ns
    report = evaluate_gan(store, demo_dataset, feature_config=config, samples_per_class=6)
    assert (gan_dir / result_key).stat().st_mtime_ns == stamp  # cached, not trained again
    assert report.feature_space == space.description
    assert all(q.fid is not None and math.isfinite(q.fid) for q in report.classes.values())


def _inception_file(path: Path) -> Path:
    """A state_dict file of torchmetrics' FID Inception-v3 architecture with random weights (the real file
    cannot be downloaded here): it exercises loading and the standard-space code path, not the figures."""
    from torch import nn
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    skeleton = nn.Module()
    parts = {
        "Conv2d_1a_3x3": fe.BasicConv2d(3, 32, kernel_size=3, stride=2),
        "Conv2d_2a_3x3": fe.BasicConv2d(32, 32, kernel_size=3),
        "Conv2d_2b_3x3": fe.BasicConv2d(32, 64, kernel_size=3, padding=1),
        "Conv2d_3b_1x1": fe.BasicConv2d(64, 80, kernel_size=1),
        "Conv2d_4a_3x3": fe.BasicConv2d(80, 192, kernel_size=3),
        "Mixed_5b": fe.InceptionA(192, pool_features=32),
        "Mixed_5c": fe.InceptionA(256, pool_features=64),
        "Mixed_5d": fe.InceptionA(288, pool_features=64),
        "Mixed_6a": fe.InceptionB(288),
        "Mixed_6b": fe.InceptionC(768, channels_7x7=128),
        "Mixed_6c": fe.InceptionC(768, channels_7x7=160),
        "Mixed_6d": fe.InceptionC(768, channels_7x7=160),
        "Mixed_6e": fe.InceptionC(768, channels_7x7=192),
        "Mixed_7a": fe.InceptionD(768),
        "Mixed_7b": fe.InceptionE_1(1280),
        "Mixed_7c": fe.InceptionE_2(2048),
        "fc": nn.Linear(2048, 1008),
    }
    for name, module in parts.items():
        skeleton.add_module(name, module)
    torch.manual_seed(0)
    for parameter in skeleton.parameters():  # BasicConv2d's batch norm: random but well-scaled weights
        nn.init.normal_(parameter, std=0.05)
    torch.save(skeleton.state_dict(), path)
    return path


def test_standard_feature_space_from_a_local_weights_file(
    tiny_gan: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    from dermasynth.gan.quality import STANDARD_UNAVAILABLE, standard_extractor

    weights = _inception_file(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    extract, description = standard_extractor(weights)
    features = extract(torch.rand(2, 3, 16, 16))
    assert features.shape == (2, 2048) and "Inception-v3" in description and weights.name in description

    gan = tmp_path / "gan"
    shutil.copytree(tiny_gan, gan)
    options = {"samples_per_class": 4, "max_real_per_class": 4, "seed": 0}
    report = evaluate_gan(FilesystemStore(gan), demo_dataset, pooled_pixels, feature_space=POOLED, **options)
    assert report.standard_feature_space == STANDARD_UNAVAILABLE and report.standard_weights is None
    assert all(q.standard_fid is None for q in report.classes.values())
    report = evaluate_gan(
        FilesystemStore(gan), demo_dataset, pooled_pixels, feature_space=POOLED, standard_weights=weights, **options
    )
    assert report.standard_weights == str(weights) and report.standard_feature_space == description
    assert all(q.standard_fid is not None and q.standard_kid_mean is not None for q in report.classes.values())
    assert report.mean_standard_fid is not None
    stored = json.loads((gan / "gan_report.json").read_text())
    assert stored["standard_feature_space"] == description

    with pytest.raises(FileNotFoundError, match="does not exist"):
        standard_extractor(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="could not be loaded"):
        standard_extractor(bad)
