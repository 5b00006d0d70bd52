"""Small serving contracts and exported-model records for tests of storage and registry logic."""

from __future__ import annotations

from dermasynth.data.transforms import Preprocessing
from dermasynth.labels import HAM10000_CLASSES
from dermasynth.serving.contract import AbstentionPolicy, ParityReport, ServingContract
from dermasynth.serving.export import ExportedModel


def contract(image_size: int = 32) -> ServingContract:
    tensor_in, tensors_out = ServingContract.tensors_for(len(HAM10000_CLASSES), image_size)
    return ServingContract(
        architecture="resnet18",
        classes=HAM10000_CLASSES,
        preprocessing=Preprocessing(image_size=image_size),
        input=tensor_in,
        outputs=tensors_out,
        abstention=AbstentionPolicy(
            min_probability=0.5, ood_threshold=100.0, ood_quantile=0.95, calibration_images=10, fit_images=50
        ),
        parity=ParityReport(
            images=10, max_abs_probability_diff=0.0, max_ood_score_diff=0.0, tolerance=1e-4, passed=True
        ),
    )


def exported(tag: bytes = b"model", image_size: int = 32) -> ExportedModel:
    """An export record whose files are the given bytes (for layout tests; not a runnable model)."""
    return ExportedModel(onnx=b"onnx:" + tag, eager_state=b"state:" + tag, contract=contract(image_size))
