"""Predictions: ``POST /v1/predictions`` with one or many images (clinician keys).

Status codes: 200 when at least one image was answered; unusable images then appear in ``results``
as ``{"status": "error", "file": ..., "reason": ..., "detail": ...}`` entries beside the answers, in
upload order. 422 when no image could be used (the same body, every entry an error) or the request
itself is wrong (no images, too many, bad options); every error is problem+json (the 422 of unusable images
carries the same ``results`` as extension members). 503 when no model is deployed or Triton cannot
answer; the gateway stays up and answers again as soon as Triton does.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse, Response

from dermasynth.serving.inference_client import InferenceFailed, InferenceUnavailable
from dermasynth.serving.prediction import BadRequest, NoLiveModel, Upload
from dermasynth.serving.schemas import ImageError, PredictionResponse
from services.gateway.deps import ClinicianKey
from services.gateway.errors import problem_response
from services.gateway.inference import InferenceDep

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the clinician scope"},
    422: {
        "model": PredictionResponse,
        "description": "no image could be used (each one's reason is listed), or "
        "the request is wrong (no images, more than the limit, bad options: then {detail, reason})",
    },
    502: {"description": "Triton answered with an error"},
    503: {"description": "no model version is deployed, or Triton is unreachable or has not loaded it"},
}


def _error(code: int, detail: str, reason: str) -> JSONResponse:
    return problem_response(code, reason, detail)


@router.post(
    "",
    response_model=PredictionResponse,
    responses=_RESPONSES,
    summary="Most likely lesion classes per image, with an abstain flag; not a diagnosis",
)
async def predict(
    _: ClinicianKey,
    inference: InferenceDep,
    http: Request,
    images: Annotated[list[UploadFile], File(description="one or more images (JPEG, PNG, BMP, TIFF, WebP)")],
    top_k: Annotated[int, Query(ge=1, le=20, description="how many classes to list per image")] = 3,
    explain: Annotated[bool, Query(description="add a Grad-CAM heat map (PNG, base64) per image")] = False,
    model: Annotated[
        str | None, Query(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="a served model other than the default")
    ] = None,
) -> Response:
    limit = inference.settings.max_prediction_images
    if len(images) > limit:
        return _error(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{len(images)} images in one request; at most {limit} are accepted",
            "too_many_images",
        )
    uploads = [Upload(image.filename or f"image-{i + 1}", await image.read()) for i, image in enumerate(images)]
    try:
        response = await inference.predictor.predict(uploads, top_k=top_k, explain=explain, model=model)
    except BadRequest as exc:
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), "bad_request")
    except NoLiveModel as exc:
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), "no_model_deployed")
    except InferenceUnavailable as exc:
        return _error(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the inference server cannot answer now: {exc}",
            "inference_unavailable",
        )
    except InferenceFailed as exc:
        return _error(status.HTTP_502_BAD_GATEWAY, str(exc), "inference_failed")
    # the audit trail gets the model version and the number of images, never their content
    http.state.audit = {"model": response.model, "model_version": response.model_version, "images": len(uploads)}
    if not response.succeeded:  # a problem, with the per-image results as extension members
        reasons = "; ".join(f"{r.file}: {r.detail}" for r in response.results[:5] if isinstance(r, ImageError))
        return problem_response(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "no_usable_image",
            f"no image could be used ({reasons})",
            **response.model_dump(mode="json"),
        )
    # serialized once here (pydantic-core), rather than re-validated against response_model by FastAPI
    return Response(response.model_dump_json(), status_code=status.HTTP_200_OK, media_type="application/json")
