"""Classifier networks by name from torchvision, with a new head for the dataset's classes.

Four ways to start: from scratch (the default), from a local ``state_dict`` file of the ImageNet
model (transfer learning offline), from a torchvision weights name such as ``IMAGENET1K_V1`` or
``ResNet18_Weights.DEFAULT`` (downloads; only where the user is online), or from a state_dict file in
the object store, ``store:incoming/{owner}/<path>.pth``, which a worker has fetched into its cache
(:mod:`dermasynth.classifier.store_weights`). The head is the model's last
``nn.Linear`` (``fc`` of ResNet, ``classifier[6]`` of VGG, ``classifier[1]`` of EfficientNet,
``classifier`` of DenseNet); its input is the pooled penultimate feature used for FID/KID.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision.models
from torch import nn
from torchvision.models import WeightsEnum

from dermasynth.classifier import store_weights
from dermasynth.classifier.config import TrainConfig
from dermasynth.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

# The backbones the platform documents and tests; any torchvision classification model name is accepted.
SUPPORTED_MODELS: tuple[str, ...] = ("vgg16", "vgg16_bn", "resnet18", "resnet50", "efficientnet_b0", "densenet121")
_WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def head_of(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classification head: the last ``nn.Linear`` registered in the model, and its dotted name.

    Raises:
        ValueError: if the model has no linear layer.
    """
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to replace")
    return found[-1]


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Put a freshly initialised ``nn.Linear(in_features, num_classes)`` in place of the head."""
    name, head = head_of(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every parameter outside the head (head-first fine-tuning)."""
    head_name, _ = head_of(model)
    for name, param in model.named_parameters():
        if not name.startswith(head_name + "."):
            param.requires_grad_(trainable)


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features the head receives, shape ``(N, D)`` (runs the model once)."""
    _, head = head_of(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


def resolve_weights(name: str, weights: str | None) -> Path | WeightsEnum | None:
    """What ``weights`` names: None, a local file, or a torchvision weights enum member.

    A ``store:`` reference names the worker's fetched copy (``{cache_root}/weights/<key>``).

    Raises:
        FileNotFoundError: if ``weights`` looks like a path (or a ``store:`` reference not fetched) and no
            file is there.
        ValueError: if it is neither a file nor one of the model's torchvision weights names.
    """
    if weights is None:
        return None
    if store_weights.is_store_reference(weights):
        fetched = store_weights.local_path(weights)
        if not fetched.is_file():
            raise FileNotFoundError(
                f"weights {weights!r} were not fetched into {fetched}; a worker fetches store weights "
                "(dermasynth.classifier.store_weights.fetch) before training"
            )
        return fetched
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if "/" in weights or "\\" in weights or weights.endswith(_WEIGHT_FILE_SUFFIXES):
        raise FileNotFoundError(f"weights file {weights!r} does not exist")
    enum = torchvision.models.get_model_weights(name)
    member = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    if member not in enum.__members__:
        raise ValueError(
            f"weights {weights!r} is neither a file nor a weights name of {name}; accepted names: "
            f"{', '.join(enum.__members__)} (or a local state_dict file)"
        )
    return enum[member]


def preprocessing_for(config: TrainConfig) -> Preprocessing:
    """The input transform of a model trained with ``config``: the weights' own mean/std when they carry one."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    resolved = resolve_weights(config.model, config.weights)
    if isinstance(resolved, WeightsEnum):
        transform = resolved.transforms()
        mean = tuple(getattr(transform, "mean", mean))
        std = tuple(getattr(transform, "std", std))
    return Preprocessing(image_size=config.image_size, crop=config.crop, mean=mean, std=std)


def build_model(name: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """A torchvision model with a ``num_classes`` head.

    Args:
        name: a torchvision classification model, e.g. ``resnet18``, ``vgg16_bn``, ``efficientnet_b0``.
        num_classes: classes of the dataset.
        weights: None (from scratch), a local ``state_dict`` file of the pretrained model (any head size),
            a torchvision weights name (downloaded by torchvision; needs network), or a fetched
            ``store:`` reference.

    Raises:
        ValueError: unknown model, unusable weights file, or ``num_classes`` under 2.
        FileNotFoundError: a weights path that does not exist.
    """
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    resolved = resolve_weights(name, weights)
    if resolved is None:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if isinstance(resolved, WeightsEnum):
        model = torchvision.models.get_model(name, weights=resolved)
    else:
        model = _load_weights_file(name, resolved)
    replace_head(model, num_classes)
    return model


def _load_weights_file(name: str, path: Path) -> nn.Module:
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a tensor archive
        raise ValueError(f"weights file {path} could not be read as a torch state_dict: {exc}") from exc
    state = _unwrap_state_dict(loaded, path)
    model = torchvision.models.get_model(name, weights=None)
    head_name, head = head_of(model)
    head_weight = state.get(f"{head_name}.weight")
    if isinstance(head_weight, torch.Tensor) and head_weight.ndim == 2 and head_weight.shape[0] != head.out_features:
        model = torchvision.models.get_model(name, weights=None, num_classes=head_weight.shape[0])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise ValueError(f"weights file {path} does not fit {name}: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"weights file {path} is not a {name} state_dict: {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}"
        )
    return model


def _unwrap_state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a plain state_dict, or one under ``model``/``state_dict``; drop a DDP ``module.`` prefix."""
    if isinstance(loaded, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"weights file {path} holds no state_dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def check_input_size(model: nn.Module, image_size: int) -> None:
    """Run one blank image through the model in eval mode to prove it takes ``image_size`` inputs.

    Raises:
        ValueError: naming the size and the model when its downsampling leaves nothing to pool.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    except RuntimeError as exc:
        raise ValueError(
            f"{type(model).__name__} cannot take {image_size} px inputs ({exc}); "
            "use a larger image_size (VGG and DenseNet need at least 32)"
        ) from exc
    finally:
        model.train(was_training)
