"""The serving contract of an exported model: tensors, classes, preprocessing and abstention policy.

One contract is saved beside every model version (``models/{name}/{version}/contract.json``). The
gateway reads it to preprocess images exactly as in training (geometry on the gateway, scaling and
normalization inside the exported model) and to decide when to abstain.

Tensor names keep the ``<name>__<index>`` form (the output's position in the ONNX graph): the official
Triton image's onnxruntime backend and the local Python backend that runs onnxruntime read the same
``model.onnx`` with the same names. Contract version 2 added the ONNX format, the CAM output and
the calibration, conformal sets and operating point fitted on validation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dermasynth.data.transforms import Preprocessing
from dermasynth.serving.calibration import Calibration, OperatingPoint
from dermasynth.serving.conformal import ConformalSets

INPUT_NAME = "image__0"
LOGITS_NAME = "logits__0"
OOD_SCORE_NAME = "ood_score__1"
CAM_NAME = "cam__2"
CONTRACT_VERSION = 2


class TensorSpec(BaseModel):
    """One tensor of the model's interface, without the batch dimension (-1: any size)."""

    model_config = ConfigDict(frozen=True)

    name: str
    datatype: Literal["UINT8", "FP32"]
    dims: tuple[int, ...]


class AbstentionPolicy(BaseModel):
    """When the service says "unsure, see a dermatologist" instead of a label.

    It abstains when the out-of-distribution score (the Mahalanobis distance of the penultimate
    features to the nearest class mean of the training images) exceeds ``ood_threshold``, the
    ``ood_quantile`` quantile of the scores of the validation images; when the conformal prediction
    set holds more than ``max_set_size`` classes or mixes a malignant class with benign ones; and,
    if an operator sets ``min_probability`` above 0, when the top calibrated probability is below it.
    """

    model_config = ConfigDict(frozen=True)

    min_probability: float = Field(default=0.0, ge=0, le=1, description="0: off (the conformal set decides)")
    max_set_size: int = Field(default=2, ge=1, description="abstain when the prediction set is larger")
    abstain_on_mixed_set: bool = Field(default=True, description="abstain when the set mixes malignant and benign")
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
    max_cam_diff: float = Field(
        default=0.0, description="largest CAM difference, as a fraction of the largest CAM value"
    )
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
    model_format: Literal["onnx"] = "onnx"
    onnx_opset: int | None = None
    calibration: Calibration | None = Field(default=None, description="temperature, prior shift, decision rule")
    conformal: ConformalSets | None = Field(default=None, description="the prediction-set threshold")
    operating_point: OperatingPoint | None = Field(default=None, description="when an image is called malignant")
    cam_layer: str | None = Field(
        default=None, description="layer whose class activation map the graph outputs (None: Grad-CAM on eager)"
    )

    @property
    def has_cam(self) -> bool:
        """Whether the graph outputs class-activation maps (``cam__2``)."""
        return any(o.name == CAM_NAME for o in self.outputs)

    @classmethod
    def tensors_for(
        cls, num_classes: int, image_size: int, cam: str | None = None
    ) -> tuple[TensorSpec, tuple[TensorSpec, ...]]:
        """The input and outputs of a classifier of ``num_classes`` classes at ``image_size`` pixels."""
        outputs = [
            TensorSpec(name=LOGITS_NAME, datatype="FP32", dims=(num_classes,)),
            TensorSpec(name=OOD_SCORE_NAME, datatype="FP32", dims=(1,)),
        ]
        if cam is not None:
            outputs.append(TensorSpec(name=CAM_NAME, datatype="FP32", dims=(num_classes, -1, -1)))
        return TensorSpec(name=INPUT_NAME, datatype="UINT8", dims=(3, image_size, image_size)), tuple(outputs)
