from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.models import (
    SUPPORTED_MODELS,
    build_model,
    check_input_size,
    head_of,
    penultimate_features,
    preprocessing_for,
    resolve_weights,
    set_backbone_trainable,
)

FEATURE_DIMS = {
    "vgg16": 4096,
    "vgg16_bn": 4096,
    "resnet18": 512,
    "resnet50": 2048,
    "efficientnet_b0": 1280,
    "densenet121": 1024,
}


@pytest.mark.parametrize("name", SUPPORTED_MODELS)
def test_every_backbone_trains_on_tiny_inputs(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=3)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss_now() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks for every measurement
        logits = model(x)
        assert logits.shape == (4, 3)
        return nn.functional.cross_entropy(logits, y)

    model.train()
    losses = [loss_now()]
    for _ in range(3):
        optimizer.zero_grad()
        losses[-1].backward()
        optimizer.step()
        losses.append(loss_now())
    assert losses[-1].item() < losses[0].item()
    model.eval()
    with torch.no_grad():
        assert penultimate_features(model, x[:2]).shape == (2, FEATURE_DIMS[name])


def test_head_is_the_last_linear_layer() -> None:
    assert head_of(build_model("resnet18", 5))[0] == "fc"
    assert head_of(build_model("efficientnet_b0", 5))[0] == "classifier.1"
    assert head_of(build_model("densenet121", 5))[1].out_features == 5
    with pytest.raises(ValueError, match=r"no nn\.Linear head"):
        head_of(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_too_few_classes_and_too_small_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_model("resnet18", 1)
    with pytest.raises(ValueError, match="cannot take 16 px"):
        check_input_size(build_model("vgg16", 2), 16)
    check_input_size(build_model("resnet18", 2), 16)


def test_local_weights_file_loads_the_backbone_and_gets_a_new_head(tmp_path: Path) -> None:
    torch.manual_seed(3)
    pretrained = torchvision.models.resnet18()  # stands for an ImageNet state_dict (1000-class head)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save({"model": {f"module.{k}": v for k, v in pretrained.state_dict().items()}}, path)
    state, expected = build_model("resnet18", 7, weights=str(path)).state_dict(), pretrained.state_dict()
    assert torch.equal(state["conv1.weight"], expected["conv1.weight"])
    assert torch.equal(state["layer4.1.bn2.running_var"], expected["layer4.1.bn2.running_var"])
    assert state["fc.weight"].shape == (7, 512)


def test_weights_file_with_another_head_size_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r18_21classes.pth"
    source = torchvision.models.resnet18(num_classes=21)
    torch.save(source.state_dict(), path)
    state = build_model("resnet18", 4, weights=str(path)).state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    assert state["fc.weight"].shape == (4, 512)


def test_bad_weights_are_refused_clearly(tmp_path: Path) -> None:
    wrong = tmp_path / "densenet.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), wrong)
    with pytest.raises(ValueError, match="not a resnet18 state_dict"):
        build_model("resnet18", 3, weights=str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be read"):
        build_model("resnet18", 3, weights=str(garbage))
    empty = tmp_path / "list.pth"
    torch.save([1, 2], empty)
    with pytest.raises(ValueError, match="holds no state_dict"):
        build_model("resnet18", 3, weights=str(empty))
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        build_model("resnet18", 3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_model("resnet18", 3, weights="IMAGENET_PLUS")


def test_torchvision_weight_names_resolve_and_carry_their_preprocessing() -> None:
    assert resolve_weights("resnet18", "IMAGENET1K_V1") is ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights("resnet18", "ResNet18_Weights.DEFAULT") is ResNet18_Weights.DEFAULT
    assert resolve_weights("resnet18", None) is None
    pre = preprocessing_for(TrainConfig(weights="IMAGENET1K_V1", image_size=48, crop="none"))
    transform = getattr(ResNet18_Weights.IMAGENET1K_V1, "transforms")()  # noqa: B009 (mypy misreads the enum)
    assert (pre.image_size, pre.crop) == (48, "none")
    assert pre.mean == tuple(transform.mean) and pre.std == tuple(transform.std)


def test_freezing_leaves_only_the_head_trainable() -> None:
    model = build_model("efficientnet_b0", 3)
    set_backbone_trainable(model, False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.1.weight", "classifier.1.bias"}
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())
