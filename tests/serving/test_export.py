from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.images import load_rgb
from dermasynth.data.transforms import Preprocessing
from dermasynth.serving.contract import CAM_NAME, INPUT_NAME, LOGITS_NAME, OOD_SCORE_NAME
from dermasynth.serving.explain import normalize_cam
from dermasynth.serving.export import (
    ONNX_OPSET,
    ExportedModel,
    ServingModule,
    build_serving_module,
    cam_layer_name,
    check_parity,
    load_eager,
    onnx_session,
    split_classifier,
    to_onnx,
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
    assert [o.name for o in contract.outputs] == [LOGITS_NAME, OOD_SCORE_NAME, CAM_NAME]
    assert contract.model_format == "onnx" and contract.onnx_opset == ONNX_OPSET and contract.cam_layer == "layer4"
    assert contract.calibration is not None and contract.conformal is not None
    policy = contract.abstention
    assert policy.fit_images == len(trained_run.manifest.in_split("train"))
    assert policy.calibration_images == len(trained_run.manifest.in_split("val"))

    graph = onnx.load_from_string(exported_model.onnx)
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version == ONNX_OPSET
    records = trained_run.manifest.in_split("test")
    images = [load_rgb(trained_run.manifest.path_of(r)) for r in records]
    pre = trained_run.trained.preprocessing
    pixels = torch.stack([pre.pixels_transform()(im) for im in images]).numpy()
    logits, ood, cams = onnx_session(exported_model.onnx).run(None, {INPUT_NAME: pixels})
    with torch.no_grad():
        eager = trained_run.trained.probabilities(torch.stack([pre.eval_transform()(im) for im in images]))
    assert logits.shape == (len(images), 7) and ood.shape == (len(images), 1) and cams.shape == (len(images), 7, 2, 2)
    assert torch.allclose(torch.from_numpy(logits).softmax(1), eager, atol=1e-4)
    # the calibration flags about 5% of validation images; held-out test images should look much the same
    assert np.mean(ood > policy.ood_threshold) < 0.5


def test_eager_weights_rebuild_the_trained_model(trained_run: TrainedRun, exported_model: ExportedModel) -> None:
    model = load_eager(exported_model.contract, exported_model.eager_state)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model(x), trained_run.trained.logits(x), atol=1e-5)


def test_parity_check_catches_a_different_model(trained_run: TrainedRun) -> None:
    trained = trained_run.trained
    serving, policy, _ = build_serving_module(
        trained.model, trained.preprocessing, trained.classes, trained_run.manifest
    )
    other_backbone, other_head = split_classifier(torchvision.models.resnet18(num_classes=7))
    other_serving = ServingModule(serving.normalize, other_backbone, other_head, serving.ood).eval()
    images = [load_rgb(trained_run.manifest.path_of(r)) for r in trained_run.manifest.in_split("val")[:4]]
    size = trained.preprocessing.image_size
    session = onnx_session(to_onnx(other_serving, size))
    report = check_parity(trained.model, serving, session, trained.preprocessing, images, policy.ood_threshold)
    assert not report.passed and report.max_abs_probability_diff > 1e-3


@pytest.mark.parametrize(
    ("name", "size", "layer"),
    [
        ("resnet18", 64, "layer4"),
        ("resnet18", 32, None),  # layer4 is 1x1 at 32 px: no spatial map to explain with
        ("efficientnet_b0", 64, "features"),
        ("mobilenet_v3_small", 64, None),  # a Linear + Hardswish before the last Linear
        ("vgg11", 64, None),  # an MLP head: Grad-CAM is not the CAM
        ("densenet121", 64, None),  # a ReLU between the last map and the pooling
    ],
)
def test_cam_only_where_the_head_is_global_pooling_and_one_linear(name: str, size: int, layer: str | None) -> None:
    model = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
    with torch.no_grad():  # shifted BN outputs, as a trained net has (freshly built they rarely go negative)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.uniform_(-1, 1)
    assert cam_layer_name(model, size) == layer


def test_cam_output_equals_grad_cam_of_the_last_convolution(tmp_path: Path) -> None:
    """The ONNX graph's CAM, normalized as grad-cam normalizes, equals grad-cam's Grad-CAM of layer4."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()  # layer4: 512 channels, 3x3 at 96 px
    with torch.no_grad():  # random BN statistics give every channel a different scale, as a trained net has
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    pre = Preprocessing(image_size=96)
    manifest = make_demo_dataset(tmp_path / "demo", count=35, size=96, seed=3)
    serving, _, _ = build_serving_module(model, pre, manifest.classes, manifest)
    assert serving.cam_layer == "layer4"
    session = onnx_session(to_onnx(serving, 96))
    images = [load_rgb(manifest.path_of(r)) for r in manifest.records[:4]]
    pixels = torch.stack([pre.pixels_transform()(im) for im in images])
    logits, _, cams = session.run(None, {INPUT_NAME: pixels.numpy()})
    with torch.no_grad():
        batch = pre.pixel_normalizer()(pixels)  # the very input the graph normalized
    with GradCAM(model=model, target_layers=[model.layer4]) as grad_cam:
        for c in (0, 4):
            expected = grad_cam(input_tensor=batch, targets=[ClassifierOutputTarget(c)] * len(images))
            for i in range(len(images)):
                ours = normalize_cam(cams[i, c], 96)
                assert np.abs(ours - expected[i]).max() < 1e-4, (c, i)
    assert cams.shape == (4, 7, 3, 3) and logits.shape == (4, 7)
