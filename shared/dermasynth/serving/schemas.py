"""Serving schemas: predictions (POST /v1/predictions) and model versions (/v1/models).

Pure pydantic: the gateway client, the CLI and the frontend import them without torch or PIL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from dermasynth.data.schemas import RejectReason

# -- predictions and model versions (POST /v1/predictions, /v1/models) ---------------------------------

DISCLAIMER = (
    "Research software, not a medical device: this is not a diagnosis. "
    "Have a dermatologist examine any lesion that worries you."
)


class ClassProbability(BaseModel):
    """One class and the model's probability for it."""

    label: str = Field(description="class code, e.g. 'mel'")
    name: str = Field(description="readable class name, e.g. 'Melanoma'")
    probability: float = Field(ge=0, le=1)


AbstainReasonName = Literal["out_of_distribution", "malignant_not_ruled_out", "set_too_large", "low_confidence"]


class ImagePrediction(BaseModel):
    """The answer for one image that could be read."""

    file: str
    status: Literal["ok"] = "ok"
    top_k: list[ClassProbability] = Field(
        description="most likely classes first; calibrated probabilities at the deployment's class frequencies"
    )
    label: str = Field(description="the decided class code (the decision rule and malignant operating point)")
    label_name: str = Field(description="readable name of the decided class")
    malignant: bool | None = Field(
        default=None, description="the decision calls the lesion malignant (mel, bcc, akiec); None: no operating point"
    )
    malignant_probability: float | None = Field(
        default=None, ge=0, le=1, description="calibrated probability of mel, bcc or akiec together"
    )
    prediction_set: list[ClassProbability] = Field(
        default_factory=list,
        description="classes that together hold the true one with the set's coverage (conformal), most likely first",
    )
    set_coverage: float | None = Field(default=None, description="the coverage the prediction set is built for")
    calibrated: bool = Field(default=False, description="probabilities are temperature- and prior-calibrated")
    model: str
    model_version: int
    abstain: bool = Field(description="true: the model should not be trusted on this image; see a dermatologist")
    abstain_reason: AbstainReasonName | None = Field(default=None, description="the most serious reason")
    abstain_reasons: list[AbstainReasonName] = Field(default_factory=list, description="every reason that applies")
    abstain_detail: str = Field(default="", description="the reasons in plain words")
    ood_score: float = Field(description="distance to the training images' features; above the threshold: abstain")
    explanation_png: str | None = Field(
        default=None,
        description="base64 PNG: class activation map (Grad-CAM) of the decided class over the image",
    )
    disclaimer: str = DISCLAIMER


class ImageError(BaseModel):
    """An image of the request that could not be used, and why; the others are still answered."""

    file: str
    status: Literal["error"] = "error"
    reason: RejectReason
    detail: str


ImageResult = Annotated[ImagePrediction | ImageError, Field(discriminator="status")]


class PredictionResponse(BaseModel):
    """``POST /v1/predictions``: one result per uploaded image, in upload order.

    200 when at least one image was answered (unusable ones appear as ``status: "error"`` entries);
    422 with this same body when none could be used.
    """

    request_id: str
    model: str
    model_version: int | None = Field(description="the version that answered; None when no image was usable")
    results: list[ImageResult]
    succeeded: int
    failed: int
    disclaimer: str = DISCLAIMER


class ModelLineage(BaseModel):
    """Where a model version came from."""

    run: str | None = Field(default=None, description="the training run's store prefix, e.g. runs/{job_id}")
    dataset: str | None = Field(default=None, description="the dataset it was trained and calibrated on")
    job_id: str | None = None
    export_job_id: str | None = Field(default=None, description="the export job that registered this version")
    metrics: dict[str, float] = Field(default_factory=dict, description="validation metrics of the run")


class ModelVersionInfo(BaseModel):
    """One exported version of a served model."""

    name: str
    version: int
    created_at: datetime
    architecture: str
    classes: list[str]
    image_size: int
    min_probability: float
    ood_threshold: float
    temperature: float | None = None
    set_coverage: float | None = None
    malignant_threshold: float | None = None
    lineage: ModelLineage
    owner: str = Field(default="default", description="the team or project the version belongs to")
    live: bool = False


class ModelDeployment(BaseModel):
    """One change of the live version."""

    version: int
    action: Literal["deploy", "rollback"]
    at: datetime
    previous: int | None = None


class LiveModel(BaseModel):
    """Which version of a model serves predictions, and how it got there."""

    name: str
    version: int | None
    history: list[ModelDeployment] = Field(default_factory=list, description="most recent last")


class ModelDetail(BaseModel):
    """A model: its live version and every registered version with lineage (``GET /v1/models/{name}``)."""

    live: LiveModel
    versions: list[ModelVersionInfo]
