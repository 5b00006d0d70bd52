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


class ImagePrediction(BaseModel):
    """The answer for one image that could be read."""

    file: str
    status: Literal["ok"] = "ok"
    top_k: list[ClassProbability] = Field(description="most likely classes first")
    model: str
    model_version: int
    abstain: bool = Field(description="true: the model should not be trusted on this image; see a dermatologist")
    abstain_reason: Literal["low_confidence", "out_of_distribution"] | None = None
    abstain_detail: str = ""
    ood_score: float = Field(description="distance to the training images' features; above the threshold: abstain")
    explanation_png: str | None = Field(
        default=None, description="base64 PNG: Grad-CAM heat map of the top class over the image"
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
    lineage: ModelLineage
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
