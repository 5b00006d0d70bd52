"""Heat maps of what the model looked at, overlaid on the image (``explain=true``).

For architectures whose head is global average pooling + one Linear (ResNet, EfficientNet,
MobileNet), the served ONNX graph outputs the class activation maps itself (``cam__2``; see
:mod:`dermasynth.serving.export`): Grad-CAM of the last convolution equals them, so the gateway only
normalizes one map the way grad-cam does (ReLU, min-max, resize: :func:`normalize_cam`) and draws it;
no model runs in the gateway. For other heads, Grad-CAM with the ``grad-cam`` package on the eager
model, rebuilt from the version's ``eager.pth`` (:class:`Explainer`). Either overlay is drawn on the
resized, cropped image the model received.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dermasynth.data.transforms import Preprocessing
from dermasynth.serving.export import load_eager
from dermasynth.serving.model_repository import ModelRepository


def grad_cam_layer(model: nn.Module, image_size: int) -> nn.Module:
    """The last module whose output is still a spatial feature map (more than 1x1) at ``image_size``.

    That is ``layer4`` of a ResNet, ``features`` of VGG, DenseNet, EfficientNet or MobileNet; on tiny
    inputs, where the last stage is pooled down to 1x1, an earlier stage.

    Raises:
        ValueError: if no module yields a spatial map (not a convolutional network).
    """
    finished: list[nn.Module] = []

    def record(module: nn.Module, _: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
            finished.append(module)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError(f"{type(model).__name__} has no layer with a spatial feature map; Grad-CAM needs a CNN")
    return finished[-1]


def normalize_cam(cam: np.ndarray, image_size: int) -> np.ndarray:
    """A raw class activation map (h, w) as grad-cam presents its maps: ReLU, min-max to [0, 1], resized,
    and min-max again (what its layer aggregation does after the resize)."""
    resized = scale_cam_image(np.maximum(cam, 0)[None], (image_size, image_size))
    return np.asarray(scale_cam_image(np.maximum(resized, 0)))[0]


def overlay_png(pixels: np.ndarray, heat: np.ndarray) -> bytes:
    """A PNG of ``heat`` (S, S in [0, 1]) over uint8 ``pixels`` (3, S, S), the image as the model saw it."""
    seen = pixels.transpose(1, 2, 0).astype(np.float32) / 255.0
    overlay = show_cam_on_image(seen, heat.astype(np.float32), use_rgb=True)
    buffer = io.BytesIO()
    Image.fromarray(overlay).save(buffer, format="PNG", compress_level=1)  # small images: speed over bytes
    return buffer.getvalue()


def cam_png(cam: np.ndarray, pixels: np.ndarray) -> bytes:
    """A PNG of a served class activation map (h, w) over the uint8 pixels (3, S, S) the model received."""
    return overlay_png(pixels, normalize_cam(cam, pixels.shape[-1]))


def grad_cam_png(
    model: nn.Module, preprocessing: Preprocessing, image: Image.Image, class_index: int, layer: nn.Module | None = None
) -> bytes:
    """A PNG of the Grad-CAM heat map for ``class_index`` over the image as the model saw it."""
    layer = layer or grad_cam_layer(model, preprocessing.image_size)
    batch = preprocessing.eval_transform()(image).unsqueeze(0)
    try:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            heat = cam(input_tensor=batch, targets=[ClassifierOutputTarget(class_index)])[0]
    finally:
        model.zero_grad(set_to_none=True)  # the model is shared between requests
    return overlay_png(preprocessing.pixels_transform()(image).numpy(), heat)


class Explainer:
    """Grad-CAM for served versions whose graph has no CAM output; eager models are loaded on first use
    and a few are kept.

    Thread-safe: the gateway calls it from worker threads. One explanation runs at a time per
    process (Grad-CAM hooks are set on the shared model).
    """

    def __init__(self, repository: ModelRepository, keep: int = 2) -> None:
        self.repository = repository
        self.keep = keep
        self._models: OrderedDict[tuple[str, int], tuple[nn.Module, nn.Module]] = OrderedDict()
        self._lock = threading.Lock()

    def _model(self, name: str, version: int, image_size: int) -> tuple[nn.Module, nn.Module]:
        key = (name, version)
        if key not in self._models:
            contract = self.repository.contract(name, version)
            model = load_eager(contract, self.repository.eager_state(name, version))
            self._models[key] = (model, grad_cam_layer(model, image_size))
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key]

    def explain(
        self, name: str, version: int, preprocessing: Preprocessing, image: Image.Image, class_index: int
    ) -> bytes:
        """The Grad-CAM overlay PNG of ``class_index`` for ``image`` under ``version`` of ``name``."""
        with self._lock:
            model, layer = self._model(name, version, preprocessing.image_size)
            return grad_cam_png(model, preprocessing, image, class_index, layer)
