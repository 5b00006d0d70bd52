from __future__ import annotations

import io

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from dermasynth.data.demo import render_lesion
from dermasynth.data.transforms import Preprocessing
from dermasynth.serving.explain import grad_cam_layer, grad_cam_png


def test_grad_cam_layer_is_the_last_spatial_stage() -> None:
    model = torchvision.models.resnet18(num_classes=7).eval()
    assert grad_cam_layer(model, 64) is model.layer4  # 2x2 at 64 px
    assert grad_cam_layer(model, 32) is model.layer3  # layer4 is 1x1 at 32 px
    mobile = torchvision.models.mobilenet_v3_small(num_classes=7).eval()
    assert grad_cam_layer(mobile, 64) is mobile.features


def test_grad_cam_layer_needs_a_cnn() -> None:
    with pytest.raises(ValueError, match="Grad-CAM needs a CNN"):
        grad_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)), 16)


def test_overlay_is_a_png_of_the_model_input_and_follows_the_class() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    pre = Preprocessing(image_size=64)
    image = render_lesion("mel", 1, 0, size=96)
    png = grad_cam_png(model, pre, image, class_index=4)
    overlay = Image.open(io.BytesIO(png))
    assert overlay.format == "PNG" and overlay.size == (64, 64) and overlay.mode == "RGB"
    assert png != grad_cam_png(model, pre, image, class_index=0)
    assert all(p.grad is None for p in model.parameters())  # the shared model is left clean
