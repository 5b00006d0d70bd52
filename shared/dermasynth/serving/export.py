"""Export a trained classifier for serving: ONNX with normalization, OOD score and class-activation maps built in.

The exported graph takes uint8 pixels (N, 3, S, S), already resized and cropped by
:meth:`Preprocessing.pixels_transform`, and returns the logits, the out-of-distribution score and,
where the architecture allows it, the class-activation maps of every class::

    pixels --PixelNormalize--> backbone --> features --head (last Linear)--> logits__0
                                  |                 \\--MahalanobisScore--> ood_score__1
                                  \\-- last feature map A (N, K, h, w) -- einsum(A, head.weight) --> cam__2 (N, C, h, w)

**CAM in the graph.** When the head's input is the spatial mean of the last convolutional feature map
(global average pooling straight into one Linear: ResNet, EfficientNet, MobileNet, ...), Grad-CAM of
that layer equals the class activation map ``sum_k w_ck A_k``: the gradient of logit ``c`` with
respect to ``A_k`` is ``w_ck / (h w)`` everywhere, so Grad-CAM's channel weights are ``w_ck`` up to a
positive factor that its min-max normalization removes. Export checks the pooling relation
numerically (:func:`cam_layer_name`); for other heads (VGG's MLP, DenseNet's ReLU before pooling) the
graph has no ``cam__2`` and explanations fall back to Grad-CAM on the eager model
(:mod:`dermasynth.serving.explain`).

**Why ONNX.** Triton's official image serves it with the onnxruntime backend (CPU or GPU instance
groups), and the local tritonserver runs the very same ``model.onnx`` through onnxruntime in a Python
backend, so local and production compute the same graph. It is written by torch's TorchScript-based
exporter (``dynamo=False``) at the pinned opset :data:`ONNX_OPSET`: that exporter records the forward
hook that captures the feature map and needs no extra dependency (the dynamo exporter needs
onnxscript). Export ends with a parity check: onnxruntime on served pixels must match the eager model
on the training preprocessing path (``eval_transform``) within a tolerance, or export fails.

The OOD score's class means and covariance are fitted on the training split's features and its
threshold calibrated on the validation split (see :mod:`dermasynth.serving.abstention`); the
probability calibration and conformal sets are fitted on validation logits
(:mod:`dermasynth.serving.calibration`, :mod:`dermasynth.serving.conformal`) and stored in the contract.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from dermasynth.classifier.checkpoint import TrainedModel
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.models import build_model, head_of
from dermasynth.data.dataset import ManifestDataset
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest
from dermasynth.data.transforms import PixelNormalize, Preprocessing
from dermasynth.serving.abstention import MahalanobisScore, calibrate_threshold, fit_mahalanobis
from dermasynth.serving.calibration import ServingCalibration, fit_serving_calibration, training_prior
from dermasynth.serving.contract import (
    CAM_NAME,
    INPUT_NAME,
    LOGITS_NAME,
    OOD_SCORE_NAME,
    AbstentionPolicy,
    ParityReport,
    ServingContract,
)

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
ONNX_OPSET = 17
PARITY_IMAGES = 32
_LEGACY_EXPORTER = r".*legacy TorchScript-based ONNX export.*"


class ExportError(RuntimeError):
    """Export could not produce a model that matches the eager one."""


class ServingModule(nn.Module):
    """uint8 pixels -> (logits, OOD score[, class-activation maps]): what Triton serves.

    Args:
        normalize: uint8 -> normalized float.
        backbone: the classifier without its head (returns the head's input).
        head: the last Linear.
        ood: the Mahalanobis score on the head's input.
        cam_layer: dotted name (inside ``backbone``) of the feature map whose spatial mean is the
            head's input; None: no CAM output.
    """

    def __init__(
        self,
        normalize: PixelNormalize,
        backbone: nn.Module,
        head: nn.Linear,
        ood: MahalanobisScore,
        cam_layer: str | None = None,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head
        self.ood = ood
        self.cam_layer = cam_layer
        self._maps: list[torch.Tensor] = []
        if cam_layer is not None:
            backbone.get_submodule(cam_layer).register_forward_hook(self._keep_map)

    def _keep_map(self, _module: nn.Module, _args: object, output: torch.Tensor) -> None:
        self._maps.append(output.clone())  # a later in-place op (DenseNet's ReLU) must not change it

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._maps.clear()
        features = torch.flatten(self.backbone(self.normalize(image)), 1)
        logits, ood = self.head(features), self.ood(features)
        if self.cam_layer is None:
            return logits, ood
        fmap = self._maps[-1]
        self._maps.clear()
        return logits, ood, torch.einsum("nkhw,ck->nchw", fmap, self.head.weight)


@dataclass(frozen=True)
class ExportedModel:
    """The files of one model version: the ONNX graph, the eager weights and the contract."""

    onnx: bytes
    eager_state: bytes
    contract: ServingContract


def split_classifier(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Cut a classifier into a feature extractor and its head (:func:`~dermasynth.classifier.models.head_of`).

    The head of a torchvision classifier is applied last, so ``head(flatten(backbone(x)))`` equals
    ``model(x)``; export's parity check confirms it for the model at hand.
    """
    name, head = head_of(model)
    backbone = copy.deepcopy(model).eval()
    backbone.set_submodule(name, nn.Identity())
    return backbone, copy.deepcopy(head)


def last_spatial_layer(model: nn.Module, image_size: int) -> tuple[str, nn.Module] | None:
    """(name, module) of the last module whose output is a spatial map larger than 1x1 at ``image_size``."""
    finished: list[nn.Module] = []

    def record(module: nn.Module, _: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
            finished.append(module)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    return names[id(finished[-1])], finished[-1]


def cam_layer_name(model: nn.Module, image_size: int, seed: int = 0) -> str | None:
    """The layer whose Grad-CAM is the class activation map, or None when the head is not GAP + Linear.

    Holds when the head's input equals the spatial mean of that layer's output, checked on random
    inputs (so a ReLU or an MLP between them rules it out; the output is copied before any in-place
    op of the forward pass, such as DenseNet's ``relu(inplace=True)``, can change it).
    """
    found = last_spatial_layer(model, image_size)
    if found is None:
        return None
    name, layer = found
    _, head = head_of(model)
    maps: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _m, _a, out: maps.append(out.clone())),
        head.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])),
    ]
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            model.eval()(torch.randn(2, 3, image_size, image_size, generator=generator))
    finally:
        for hook in hooks:
            hook.remove()
    pooled, head_input = maps[-1].mean(dim=(2, 3)), torch.flatten(inputs[-1], 1)
    if pooled.shape != head_input.shape:
        return None
    scale = float(head_input.abs().max()) or 1.0
    return name if float((pooled - head_input).abs().max()) <= 1e-5 * scale else None


@torch.inference_mode()
def extract_features(
    extractor: nn.Module, dataset: ManifestDataset, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``extractor`` (normalize + backbone) over uint8 images; returns (features, targets)."""
    feats, targets = [], []
    for pixels, target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        feats.append(torch.flatten(extractor(pixels), 1).numpy())
        targets.append(target.numpy())
    return np.concatenate(feats), np.concatenate(targets)


def build_serving_module(
    model: nn.Module,
    preprocessing: Preprocessing,
    classes: Sequence[str],
    manifest: Manifest,
    *,
    min_probability: float = 0.0,
    ood_quantile: float = 0.95,
) -> tuple[ServingModule, AbstentionPolicy, tuple[np.ndarray, np.ndarray]]:
    """Wrap a trained classifier with normalization, an OOD score fitted on ``manifest`` and CAM.

    Returns the module, the abstention policy and the validation (logits, targets) that calibration
    and conformal sets are fitted on.

    Raises:
        ValueError: if the train or val split is empty.
    """
    train, val = manifest.in_split("train"), manifest.in_split("val")
    if not train or not val:
        raise ValueError(
            f"the dataset at {manifest.root} needs train and val images to calibrate abstention; "
            f"it has {len(train)} train and {len(val)} val"
        )
    backbone, head = split_classifier(model)
    normalize = preprocessing.pixel_normalizer()
    extractor = nn.Sequential(normalize, backbone).eval()
    pixels = preprocessing.pixels_transform()
    train_feats, train_targets = extract_features(extractor, ManifestDataset(manifest, train, pixels, classes))
    ood = fit_mahalanobis(train_feats, train_targets)
    val_feats, val_targets = extract_features(extractor, ManifestDataset(manifest, val, pixels, classes))
    with torch.inference_mode():
        val_scores = ood(torch.from_numpy(val_feats)).squeeze(1).numpy()
        val_logits = head(torch.from_numpy(val_feats)).numpy()
    threshold = calibrate_threshold(val_scores, ood_quantile)
    policy = AbstentionPolicy(
        min_probability=min_probability,
        ood_threshold=threshold,
        ood_quantile=ood_quantile,
        calibration_images=len(val),
        fit_images=len(train),
    )
    log.info(
        "OOD score fitted on %d train images, threshold %.2f at the %.2f quantile of %d val images",
        len(train),
        policy.ood_threshold,
        ood_quantile,
        len(val),
    )
    cam = cam_layer_name(model, preprocessing.image_size)
    module = ServingModule(normalize, backbone, head, ood, cam).eval()
    return module, policy, (val_logits, val_targets)


def to_onnx(module: ServingModule, image_size: int, opset: int = ONNX_OPSET) -> bytes:
    """The ONNX graph of ``module`` for any batch size and image side, at opset ``opset``."""
    example = torch.randint(0, 256, (2, 3, image_size, image_size), dtype=torch.uint8)
    outputs = [LOGITS_NAME, OOD_SCORE_NAME] + ([CAM_NAME] if module.cam_layer else [])
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch"} for name in outputs})
    if module.cam_layer:
        axes[CAM_NAME] = {0: "batch", 2: "map_height", 3: "map_width"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=_LEGACY_EXPORTER)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to any binary file
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


def onnx_session(graph: bytes, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``graph`` (``threads`` intra-op threads; 0: onnxruntime's default)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # idle threads sleep instead of spinning (onnxruntime's OMP_WAIT_POLICY=PASSIVE): on a few shared cores
    # a spinning pool starves the other processes
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def check_parity(
    model: nn.Module,
    serving: ServingModule,
    session: ort.InferenceSession,
    preprocessing: Preprocessing,
    images: Sequence[Image.Image],
    ood_threshold: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Compare onnxruntime on served pixels with the eager model on ``eval_transform`` input.

    Probabilities must agree within ``tolerance``; OOD scores within ``tolerance`` times the threshold
    (what matters is that no abstention decision flips; the score itself is a quadratic form that
    magnifies float rounding where the features vary little); CAMs within ``tolerance`` of their
    largest magnitude.
    """
    eval_tf, pixels_tf = preprocessing.eval_transform(), preprocessing.pixels_transform()
    with torch.no_grad():
        reference = torch.softmax(model.eval()(torch.stack([eval_tf(im) for im in images])), dim=1).numpy()
        pixels = torch.stack([pixels_tf(im) for im in images])
        eager = [t.numpy() for t in serving(pixels)]
    got = session.run(None, {INPUT_NAME: pixels.numpy()})
    logits = got[0].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    prob_diff = float(np.abs(probs - reference).max())
    ood_diff = float(np.abs(got[1] - eager[1]).max()) / max(abs(ood_threshold), 1e-12)
    cam_diff = 0.0
    if len(eager) != len(got):  # a CAM output missing on one side
        cam_diff = float("inf")
    elif len(eager) > 2:
        cam_diff = float(np.abs(got[2] - eager[2]).max()) / max(float(np.abs(eager[2]).max()), 1e-12)
    return ParityReport(
        images=len(images),
        max_abs_probability_diff=prob_diff,
        max_ood_score_diff=ood_diff,
        max_cam_diff=cam_diff,
        tolerance=tolerance,
        passed=prob_diff <= tolerance and ood_diff <= tolerance and cam_diff <= tolerance,
    )


def export_classifier(
    model: nn.Module,
    architecture: str,
    classes: Sequence[str],
    preprocessing: Preprocessing,
    manifest: Manifest,
    *,
    train_prior: Sequence[float] | None = None,
    deployment_prior: Sequence[float] | None = None,
    min_probability: float = 0.0,
    ood_quantile: float = 0.95,
    coverage: float = 0.9,
    malignant_sensitivity: float = 0.85,
    max_set_size: int = 2,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportedModel:
    """Export a trained classifier: ONNX graph, eager weights and contract, checked for parity.

    Args:
        model: the trained classifier.
        architecture: its builder name (recorded so the eager model can be rebuilt).
        classes: class names in index order.
        preprocessing: the preprocessing it was trained with.
        manifest: its dataset (train fits the OOD score; val calibrates everything; val images check parity).
        train_prior: class frequencies the model saw in training (the sampler's); None: the train split's.
        deployment_prior: class frequencies to serve probabilities for; None: the train split's real ones.
        min_probability: abstain below this top-class probability (0: off; conformal sets decide).
        ood_quantile: quantile of validation OOD scores used as the threshold.
        coverage: target coverage of the conformal prediction sets.
        malignant_sensitivity: the malignant sensitivity the operating point must reach on validation.
        max_set_size: abstain when a prediction set holds more classes than this.
        tolerance: largest accepted difference between exported and eager probabilities.

    Raises:
        ExportError: if the exported model does not match the eager one within ``tolerance``.
    """
    model = copy.deepcopy(model).cpu().eval()
    serving, policy, (val_logits, val_targets) = build_serving_module(
        model, preprocessing, classes, manifest, min_probability=min_probability, ood_quantile=ood_quantile
    )
    real_prior = training_prior(manifest, classes, balance="none")
    calibration: ServingCalibration = fit_serving_calibration(
        val_logits,
        val_targets,
        classes,
        train_prior=np.asarray(train_prior if train_prior is not None else real_prior),
        deployment_prior=np.asarray(deployment_prior if deployment_prior is not None else real_prior),
        coverage=coverage,
        malignant_sensitivity=malignant_sensitivity,
        max_set_size=max_set_size,
    )
    graph = to_onnx(serving, preprocessing.image_size)
    images = [load_rgb(manifest.path_of(r)) for r in manifest.in_split("val")[:PARITY_IMAGES]]
    parity = check_parity(model, serving, onnx_session(graph), preprocessing, images, policy.ood_threshold, tolerance)
    if not parity.passed:
        raise ExportError(
            f"exported model differs from the eager model: max probability difference "
            f"{parity.max_abs_probability_diff:.2e}, OOD score difference "
            f"{parity.max_ood_score_diff:.2e} of the threshold, CAM difference {parity.max_cam_diff:.2e} "
            f"(tolerance {tolerance:.0e})"
        )
    tensor_in, tensors_out = ServingContract.tensors_for(len(classes), preprocessing.image_size, cam=serving.cam_layer)
    contract = ServingContract(
        architecture=architecture,
        classes=tuple(classes),
        preprocessing=preprocessing,
        input=tensor_in,
        outputs=tensors_out,
        abstention=policy,
        parity=parity,
        calibration=calibration.calibration,
        conformal=calibration.conformal,
        operating_point=calibration.operating_point,
        cam_layer=serving.cam_layer,
        onnx_opset=ONNX_OPSET,
    )
    state = io.BytesIO()
    torch.save(model.state_dict(), state)
    return ExportedModel(onnx=graph, eager_state=state.getvalue(), contract=contract)


def export_trained(
    trained: TrainedModel,
    manifest: Manifest,
    *,
    deployment_prior: Sequence[float] | None = None,
    min_probability: float = 0.0,
    ood_quantile: float = 0.95,
    coverage: float = 0.9,
    malignant_sensitivity: float = 0.85,
    max_set_size: int = 2,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportedModel:
    """Export a run's model loaded by :func:`~dermasynth.classifier.checkpoint.load_trained`.

    The training prior comes from the run's balancing (:func:`sampler_prior`). See
    :func:`export_classifier` for the arguments and checks.
    """
    return export_classifier(
        trained.model,
        trained.config.model,
        trained.classes,
        trained.preprocessing,
        manifest,
        train_prior=sampler_prior(trained.config, manifest, trained.classes),
        deployment_prior=deployment_prior,
        min_probability=min_probability,
        ood_quantile=ood_quantile,
        coverage=coverage,
        malignant_sensitivity=malignant_sensitivity,
        max_set_size=max_set_size,
        tolerance=tolerance,
    )


def sampler_prior(config: TrainConfig, manifest: Manifest, classes: Sequence[str]) -> list[float]:
    """The class frequencies a run trained with ``config`` saw (uniform under the balancing sampler)."""
    return training_prior(manifest, classes, balance=config.balance).tolist()


def load_eager(contract: ServingContract, eager_state: bytes) -> nn.Module:
    """Rebuild the eager classifier of an exported version (for Grad-CAM), in eval mode on the CPU."""
    model = build_model(contract.architecture, len(contract.classes), weights=None)
    model.load_state_dict(torch.load(io.BytesIO(eager_state), map_location="cpu", weights_only=True))
    return model.eval()
