"""The loss weight of synthetic training images (``synthetic_weight``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.data import DataLoader

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import SampleWeightedCrossEntropy, SourceWeighted, train_one_epoch
from dermasynth.classifier.models import build_model
from dermasynth.data.dataset import ManifestDataset
from dermasynth.data.manifest import Manifest
from dermasynth.data.transforms import Preprocessing


def test_weighted_loss_is_cross_entropy_with_unit_weights_and_ignores_zero_weights() -> None:
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    class_weight = torch.tensor([1.0, 2.0, 0.5])
    for weight in (None, class_weight):
        plain = nn.CrossEntropyLoss(weight=weight)(logits, targets)
        assert torch.allclose(SampleWeightedCrossEntropy(weight)(logits, targets, torch.ones(6)), plain)
        half = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
        first = nn.CrossEntropyLoss(weight=weight)(logits[:3], targets[:3])
        assert torch.allclose(SampleWeightedCrossEntropy(weight)(logits, targets, half), first)


def test_the_default_weight_keeps_run_keys_and_another_changes_them() -> None:
    base = TrainConfig()
    assert "synthetic_weight" not in base.result_fields()
    assert TrainConfig(synthetic_weight=0.5).result_fields()["synthetic_weight"] == 0.5


def test_synthetic_images_with_weight_zero_do_not_move_the_model(demo_dataset: Manifest) -> None:
    train = demo_dataset.in_split("train")[:16]
    synthetic = [dataclasses.replace(r, source="synthetic") for r in train]
    manifest = Manifest(synthetic, demo_dataset.root)
    transform = Preprocessing(image_size=32).eval_transform()
    weighted = SourceWeighted(ManifestDataset(manifest, synthetic, transform, demo_dataset.classes), 0.0)
    assert weighted.weights == [0.0] * 16 and len(weighted) == 16
    torch.manual_seed(0)
    model = build_model("resnet18", len(demo_dataset.classes))
    model.eval()  # batch-norm statistics stay put, so only the gradient step could change the weights
    model.train = lambda mode=True: model  # type: ignore[method-assign,assignment]
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    stats = train_one_epoch(
        model,
        DataLoader(weighted, batch_size=8),
        SampleWeightedCrossEntropy(),
        optimizer,
        torch.amp.GradScaler("cpu", enabled=False),
        torch.device("cpu"),
    )
    assert stats.steps == 2 and stats.loss == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    real = SourceWeighted(ManifestDataset(demo_dataset, train, transform, demo_dataset.classes), 0.0)
    assert real.weights == [1.0] * 16  # real images keep weight 1
    train_one_epoch(
        model,
        DataLoader(real, batch_size=8),
        SampleWeightedCrossEntropy(),
        optimizer,
        torch.amp.GradScaler("cpu", enabled=False),
        torch.device("cpu"),
    )
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
