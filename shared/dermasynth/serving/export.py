"""Export a trained classifier for serving: TorchScript with normalization and OOD score built in.

The exported graph takes uint8 pixels (N, 3, S, S), already resized and cropped by
:meth:`Preprocessing.pixels_transform`, and returns the logits and the out-of-distribution score::

    pixels --PixelNormalize--> backbone --> features --head (last Linear)--> logits
                                                    \\--MahalanobisScore--> ood_score

The OOD score's class means and covariance are fitted on the training split's features and its
threshold calibrated on the validation split (see :mod:`dermasynth.serving.abstention`). Export ends
with a parity check: the TorchScript model on served pixels must match the eager model on the
training preprocessing path (``eval_transform``) within a tolerance, or export fails.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from dermasynth.classifier.checkpoint import TrainedModel
from dermasynth.classifier.models import build_model, head_of
from dermasynth.data.dataset import ManifestDataset
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest
from dermasynth.data.transforms import PixelNormalize, Preprocessing
from dermasynth.serving.abstention import MahalanobisScore, calibrate_threshold, fit_mahalanobis
from dermasynth.serving.contract import AbstentionPolicy, ParityReport, ServingContract

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
# TorchScript is what Triton's PyTorch backend runs; torch 2.x warns that it is deprecated.
_JIT_DEPRECATED = r".*torch\.jit\..* is deprecated"
PARITY_IMAGES = 32


class ExportError(RuntimeError):
    """Export could not produce a model that matches the eager one."""


class ServingModule(nn.Module):
    """uint8 pixels -> (logits, OOD score): what Triton serves."""

    def __init__(self, normalize: PixelNormalize, backbone: nn.Module, head: nn.Linear, ood: MahalanobisScore) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head
        self.ood = ood

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.flatten(self.backbone(self.normalize(image)), 1)
        return self.head(features), self.ood(features)


@dataclass(frozen=True)
class ExportedModel:
    """The files of one model version: TorchScript, the eager weights (for Grad-CAM) and the contract."""

    torchscript: bytes
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
    min_probability: float = 0.5,
    ood_quantile: float = 0.95,
) -> tuple[ServingModule, AbstentionPolicy]:
    """Wrap a trained classifier with normalization and an OOD score fitted on ``manifest``.

    Args:
        model: the trained classifier (eval mode is set on a copy).
        preprocessing: the preprocessing it was trained with.
        classes: class names in index order.
        manifest: the dataset it was trained on: train split fits the OOD score, val calibrates it.
        min_probability: abstain below this top-class probability.
        ood_quantile: quantile of validation OOD scores used as the threshold.

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
    val_feats, _ = extract_features(extractor, ManifestDataset(manifest, val, pixels, classes))
    with torch.inference_mode():
        val_scores = ood(torch.from_numpy(val_feats)).squeeze(1).numpy()
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
    return ServingModule(normalize, backbone, head, ood).eval(), policy


def to_torchscript(module: ServingModule, image_size: int) -> torch.jit.ScriptModule:
    """Trace and freeze ``module`` for a batch of any size."""
    example = torch.randint(0, 256, (2, 3, image_size, image_size), dtype=torch.uint8)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=_JIT_DEPRECATED)
        traced = torch.jit.trace(module.eval(), example, check_trace=False)  # check_parity compares instead
        return torch.jit.freeze(traced)


def check_parity(
    model: nn.Module,
    serving: ServingModule,
    scripted: torch.jit.ScriptModule,
    preprocessing: Preprocessing,
    images: Sequence[Image.Image],
    ood_threshold: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Compare the exported model on served pixels with the eager model on ``eval_transform`` input.

    Probabilities must agree within ``tolerance``; OOD scores within ``tolerance`` times the threshold
    (what matters is that no abstention decision flips; the score itself is a quadratic form that
    magnifies float rounding where the features vary little).
    """
    eval_tf, pixels_tf = preprocessing.eval_transform(), preprocessing.pixels_transform()
    with torch.no_grad():
        reference = torch.softmax(model.eval()(torch.stack([eval_tf(im) for im in images])), dim=1)
        pixels = torch.stack([pixels_tf(im) for im in images])
        eager_ood = serving(pixels)[1]
        logits, ood = scripted(pixels)
    prob_diff = float((torch.softmax(logits, dim=1) - reference).abs().max())
    ood_diff = float((ood - eager_ood).abs().max()) / max(abs(ood_threshold), 1e-12)
    return ParityReport(
        images=len(images),
        max_abs_probability_diff=prob_diff,
        max_ood_score_diff=ood_diff,
        tolerance=tolerance,
        passed=prob_diff <= tolerance and ood_diff <= tolerance,
    )


def export_classifier(
    model: nn.Module,
    architecture: str,
    classes: Sequence[str],
    preprocessing: Preprocessing,
    manifest: Manifest,
    *,
    min_probability: float = 0.5,
    ood_quantile: float = 0.95,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportedModel:
    """Export a trained classifier: TorchScript, eager weights and contract, checked for parity.

    Args:
        model: the trained classifier.
        architecture: its builder name (recorded so the eager model can be rebuilt for Grad-CAM).
        classes: class names in index order.
        preprocessing: the preprocessing it was trained with.
        manifest: its dataset (train fits, val calibrates the OOD score; val images check parity).
        min_probability: abstain below this top-class probability.
        ood_quantile: quantile of validation OOD scores used as the threshold.
        tolerance: largest accepted difference between exported and eager probabilities.

    Raises:
        ExportError: if the exported model does not match the eager one within ``tolerance``.
    """
    model = copy.deepcopy(model).cpu().eval()
    serving, policy = build_serving_module(
        model, preprocessing, classes, manifest, min_probability=min_probability, ood_quantile=ood_quantile
    )
    scripted = to_torchscript(serving, preprocessing.image_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=_JIT_DEPRECATED)
        torch.jit.save(scripted, buffer)
        reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")
    images = [load_rgb(manifest.path_of(r)) for r in manifest.in_split("val")[:PARITY_IMAGES]]
    parity = check_parity(model, serving, reloaded, preprocessing, images, policy.ood_threshold, tolerance)
    if not parity.passed:
        raise ExportError(
            f"exported model differs from the eager model: max probability difference "
            f"{parity.max_abs_probability_diff:.2e}, OOD score difference "
            f"{parity.max_ood_score_diff:.2e} of the threshold (tolerance {tolerance:.0e})"
        )
    tensor_in, tensors_out = ServingContract.tensors_for(len(classes), preprocessing.image_size)
    contract = ServingContract(
        architecture=architecture,
        classes=tuple(classes),
        preprocessing=preprocessing,
        input=tensor_in,
        outputs=tensors_out,
        abstention=policy,
        parity=parity,
    )
    state = io.BytesIO()
    torch.save(model.state_dict(), state)
    return ExportedModel(torchscript=buffer.getvalue(), eager_state=state.getvalue(), contract=contract)


def export_trained(
    trained: TrainedModel,
    manifest: Manifest,
    *,
    min_probability: float = 0.5,
    ood_quantile: float = 0.95,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportedModel:
    """Export a run's model loaded by :func:`~dermasynth.classifier.checkpoint.load_trained`.

    See :func:`export_classifier` for the arguments and checks.
    """
    return export_classifier(
        trained.model,
        trained.config.model,
        trained.classes,
        trained.preprocessing,
        manifest,
        min_probability=min_probability,
        ood_quantile=ood_quantile,
        tolerance=tolerance,
    )


def load_eager(contract: ServingContract, eager_state: bytes) -> nn.Module:
    """Rebuild the eager classifier of an exported version (for Grad-CAM), in eval mode on the CPU."""
    model = build_model(contract.architecture, len(contract.classes), weights=None)
    model.load_state_dict(torch.load(io.BytesIO(eager_state), map_location="cpu", weights_only=True))
    return model.eval()
