"""The serving contract of an exported model: tensors, classes, preprocessing and abstention policy.

One contract is saved beside every model version (``models/{name}/{version}/contract.json``). The
gateway reads it to preprocess images exactly as in training (geometry on the gateway, scaling and
normalization inside the exported model) and to decide when to abstain.

Tensor names follow the PyTorch backend's ``<name>__<index>`` convention, so the official Triton
image's libtorch backend and the local Python implementation of it serve the same repository.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dermasynth.data.transforms import Preprocessing

INPUT_NAME = "image__0"
LOGITS_NAME = "logits__0"
OOD_SCORE_NAME = "ood_score__1"
CONTRACT_VERSION = 1


class TensorSpec(BaseModel):
    """One tensor of the model's interface, without the batch dimension (-1: any size)."""

    model_config = ConfigDict(frozen=True)

    name: str
    datatype: Literal["UINT8", "FP32"]
    dims: tuple[int, ...]


class AbstentionPolicy(BaseModel):
    """When the service says "unsure, see a dermatologist" instead of a label.

    It abstains when the highest class probability is below ``min_probability``, or when the
    out-of-distribution score (the Mahalanobis distance of the penultimate features to the nearest
    class mean of the training images) exceeds ``ood_threshold``, which is the ``ood_quantile``
    quantile of the scores of the validation images.
    """

    model_config = ConfigDict(frozen=True)

    min_probability: float = Field(ge=0, le=1)
    ood_method: Literal["mahalanobis"] = "mahalanobis"
    ood_threshold: float
    ood_quantile: float = Field(gt=0, le=1)
    calibration_images: int = Field(ge=1, description="validation images the threshold was calibrated on")
    fit_images: int = Field(ge=1, description="training images the class means and covariance came from")


class ParityReport(BaseModel):
    """Exported model vs the eager model on the training preprocessing path."""

    model_config = ConfigDict(frozen=True)

    images: int
    max_abs_probability_diff: float
    max_ood_score_diff: float = Field(description="largest OOD score difference, as a fraction of the threshold")
    tolerance: float
    passed: bool


class ServingContract(BaseModel):
    """Everything a server and a client need to agree on for one exported model version."""

    model_config = ConfigDict(frozen=True)

    contract_version: int = CONTRACT_VERSION
    architecture: str = Field(description="builder name of the eager model, e.g. torchvision 'resnet18'")
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    abstention: AbstentionPolicy
    parity: ParityReport
    model_format: Literal["torchscript"] = "torchscript"

    @classmethod
    def tensors_for(cls, num_classes: int, image_size: int) -> tuple[TensorSpec, tuple[TensorSpec, ...]]:
        """The input and outputs of a classifier of ``num_classes`` classes at ``image_size`` pixels."""
        return (
            TensorSpec(name=INPUT_NAME, datatype="UINT8", dims=(3, image_size, image_size)),
            (
                TensorSpec(name=LOGITS_NAME, datatype="FP32", dims=(num_classes,)),
                TensorSpec(name=OOD_SCORE_NAME, datatype="FP32", dims=(1,)),
            ),
        )
