from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision

from dermasynth.data.images import load_rgb
from dermasynth.serving.contract import INPUT_NAME, LOGITS_NAME, OOD_SCORE_NAME
from dermasynth.serving.export import (
    ExportedModel,
    ServingModule,
    build_serving_module,
    check_parity,
    load_eager,
    split_classifier,
    to_torchscript,
)
from tests.triton_fixtures import TrainedRun


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_split_classifier_reproduces_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
    backbone, head = split_classifier(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(head(torch.flatten(backbone(x), 1)), model(x), atol=1e-5)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 7


def test_export_matches_the_eager_model_on_the_training_path(
    trained_run: TrainedRun, exported_model: ExportedModel
) -> None:
    contract = exported_model.contract
    assert contract.parity.passed and contract.parity.images > 0
    assert contract.parity.max_abs_probability_diff <= 1e-4
    assert contract.classes == tuple(trained_run.trained.classes)
    assert contract.preprocessing == trained_run.trained.preprocessing
    assert contract.input.name == INPUT_NAME and contract.input.datatype == "UINT8"
    assert [o.name for o in contract.outputs] == [LOGITS_NAME, OOD_SCORE_NAME]
    policy = contract.abstention
    assert policy.fit_images == len(trained_run.manifest.in_split("train"))
    assert policy.calibration_images == len(trained_run.manifest.in_split("val"))

    scripted = torch.jit.load(io.BytesIO(exported_model.torchscript))
    records = trained_run.manifest.in_split("test")
    images = [load_rgb(trained_run.manifest.path_of(r)) for r in records]
    pre = trained_run.trained.preprocessing
    with torch.no_grad():
        logits, ood = scripted(torch.stack([pre.pixels_transform()(im) for im in images]))
        eager = trained_run.trained.probabilities(torch.stack([pre.eval_transform()(im) for im in images]))
    assert logits.shape == (len(images), 7) and ood.shape == (len(images), 1)
    assert torch.allclose(logits.softmax(1), eager, atol=1e-4)
    # the calibration flags about 5% of validation images; held-out test images should look much the same
    assert np.mean(ood.numpy() > policy.ood_threshold) < 0.5


def test_eager_weights_rebuild_the_trained_model(trained_run: TrainedRun, exported_model: ExportedModel) -> None:
    model = load_eager(exported_model.contract, exported_model.eager_state)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model(x), trained_run.trained.logits(x), atol=1e-5)


def test_parity_check_catches_a_different_model(trained_run: TrainedRun) -> None:
    trained = trained_run.trained
    serving, policy = build_serving_module(trained.model, trained.preprocessing, trained.classes, trained_run.manifest)
    other_backbone, other_head = split_classifier(torchvision.models.resnet18(num_classes=7))
    other_serving = ServingModule(serving.normalize, other_backbone, other_head, serving.ood).eval()
    images = [load_rgb(trained_run.manifest.path_of(r)) for r in trained_run.manifest.in_split("val")[:4]]
    report = check_parity(
        trained.model, serving, to_torchscript(other_serving, 32), trained.preprocessing, images, policy.ood_threshold
    )
    assert not report.passed and report.max_abs_probability_diff > 1e-3
