"""The prediction logic behind ``POST /v1/predictions``, independent of HTTP.

Per request, before any decoding or model lookup: each image's pixel count is read from its header and
held to a per-image limit (lower than the import limit), and the request's total to a pixel budget; an
``explain`` request names at most ``max_explained`` images. Then every image is checked and decoded
once to RGB (:func:`~dermasynth.data.images.decode_checked`,
the ``inspect_image`` checks: full decode, pixel count capped). Metadata never leaves that step: only
the pixels go on, and a stripped copy only when retention is on. The pixels are resized and cropped
by the live version's own :class:`~dermasynth.data.transforms.Preprocessing` and sent, as one uint8
batch, to the inference server; Triton's dynamic batcher merges concurrent requests. Unusable images
become per-image errors; the rest are answered with their calibrated top-k probabilities, the decided
label (decision rule and malignant operating point of the version's contract), the conformal
prediction set, the abstention decision with its reasons in plain words and, on request, the class
activation map of the decided label (an output of the served graph; Grad-CAM on the eager model only
for architectures without it). Logs carry the request id, counts and timings, never image content.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
import uuid
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.special import softmax

from dermasynth.data.images import ACCEPTED_FORMATS, RejectReason, decode_checked
from dermasynth.labels import CLASS_NAMES
from dermasynth.serving.abstention import decide
from dermasynth.serving.calibration import MALIGNANT_CLASSES, calibrated_probabilities, malignant_mask
from dermasynth.serving.calibration import decide as decide_label
from dermasynth.serving.conformal import prediction_sets
from dermasynth.serving.contract import ServingContract
from dermasynth.serving.explain import Explainer, cam_png
from dermasynth.serving.inference_client import InferenceClient, InferenceOutput, VersionUnavailable
from dermasynth.serving.registry import LIVE_REFRESH_S, ModelRegistry
from dermasynth.serving.retention import Retention
from dermasynth.serving.schemas import ClassProbability, ImageError, ImagePrediction, ImageResult, PredictionResponse

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """The request as a whole cannot be answered (no images, too many, bad options)."""


class NoLiveModel(LookupError):
    """No version of the model is deployed."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name as the client gave it, and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class _Served:
    version: int
    contract: ServingContract
    read_at: float


class LiveVersions:
    """The live version of each model and its contract, re-read from the registry at most every ``refresh_s``."""

    def __init__(self, registry: ModelRegistry, refresh_s: float = LIVE_REFRESH_S) -> None:
        self.registry = registry
        self.refresh_s = refresh_s
        self._live: dict[str, _Served] = {}
        self._contracts: dict[tuple[str, int], ServingContract] = {}

    async def get(self, name: str, refresh: bool = False) -> tuple[int, ServingContract]:
        """(version, contract) of the live version. Raises :class:`NoLiveModel`."""
        served = self._live.get(name)
        if refresh or served is None or time.monotonic() - served.read_at > self.refresh_s:
            served = await asyncio.to_thread(self._read, name)
            self._live[name] = served
        return served.version, served.contract

    def _read(self, name: str) -> _Served:
        try:
            version = self.registry.live(name).version
        except ValueError as exc:  # an invalid model name
            raise NoLiveModel(str(exc)) from None
        if version is None:
            raise NoLiveModel(
                f"no version of model {name!r} is deployed; deploy one with "
                "`dermasynth models deploy` or POST /v1/models/{name}/deploy"
            )
        key = (name, version)
        if key not in self._contracts:
            self._contracts[key] = self.registry.repository.contract(name, version)
        return _Served(version, self._contracts[key], time.monotonic())


@dataclass
class _Prepared:
    results: list[ImageResult | None]
    pixels: list[np.ndarray]
    indices: list[int]
    images: list[Image.Image]  # for explanations: the resized, cropped image the model saw, never the full one


def header_pixels(data: bytes) -> int | None:
    """width*height from an accepted format's header (nothing decoded), or None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None
    return width * height


class Predictor:
    """Answers prediction requests through an inference server.

    Args:
        client: the inference server.
        registry: model versions and the live pointer.
        default_model: the model used when a request names none.
        max_images: most images per request.
        max_pixels: decompression-bomb guard per image.
        retention: keeps stripped copies when enabled.
        explainer: Grad-CAM; None disables ``explain``.
    """

    def __init__(
        self,
        client: InferenceClient,
        registry: ModelRegistry,
        *,
        default_model: str,
        max_images: int,
        max_pixels: int,
        retention: Retention | None = None,
        explainer: Explainer | None = None,
        max_request_pixels: int | None = None,
        max_explained: int | None = None,
    ) -> None:
        self.client = client
        self.registry = registry
        self.live = LiveVersions(registry)
        self.default_model = default_model
        self.max_images = max_images
        self.max_pixels = max_pixels
        self.retention = retention
        self.explainer = explainer
        self.max_request_pixels = max_request_pixels
        self.max_explained = max_explained

    async def predict(
        self, uploads: list[Upload], *, top_k: int = 3, explain: bool = False, model: str | None = None
    ) -> PredictionResponse:
        """Answer every image of one request.

        Raises:
            BadRequest: no images, more than ``max_images``, or a ``top_k`` below 1.
            NoLiveModel: nothing is deployed.
            InferenceUnavailable: the inference server cannot answer.
        """
        if not uploads:
            raise BadRequest("no images in the request: send 1 or more files in the 'images' form field")
        if len(uploads) > self.max_images:
            raise BadRequest(f"{len(uploads)} images in one request; at most {self.max_images} are accepted")
        if top_k < 1:
            raise BadRequest(f"top_k must be at least 1, got {top_k}")
        if explain and self.max_explained is not None and len(uploads) > self.max_explained:
            raise BadRequest(
                f"explain=true with {len(uploads)} images; at most {self.max_explained} images are explained per "
                "request (DERMASYNTH_MAX_EXPLAINED_IMAGES): send fewer, or explain=false"
            )
        name = model or self.default_model
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        oversized = self._check_pixel_budget(uploads)
        if len(oversized) == len(uploads):  # nothing left to answer: no model needed
            return PredictionResponse(
                request_id=request_id,
                model=name,
                model_version=None,
                results=list(oversized.values()),
                succeeded=0,
                failed=len(uploads),
            )
        version, contract = await self.live.get(name)
        if explain and not contract.has_cam and self.explainer is None:
            raise BadRequest("explanations are not available for this model on this gateway")
        prepared = await asyncio.to_thread(
            self._prepare, uploads, contract, explain and not contract.has_cam, oversized
        )
        prepared_at = time.perf_counter()
        output: InferenceOutput | None = None
        if prepared.pixels:
            try:
                output = await self.client.infer(name, version, np.stack(prepared.pixels), explain and contract.has_cam)
            except VersionUnavailable:  # a deploy or rollback moved the live pointer: follow it once
                version, new_contract = await self.live.get(name, refresh=True)
                if new_contract.preprocessing != contract.preprocessing or new_contract.has_cam != contract.has_cam:
                    prepared = await asyncio.to_thread(
                        self._prepare, uploads, new_contract, explain and not new_contract.has_cam, oversized
                    )
                contract = new_contract
                output = await self.client.infer(name, version, np.stack(prepared.pixels), explain and contract.has_cam)
        inferred_at = time.perf_counter()
        results = prepared.results
        if output is not None:
            if explain and not contract.has_cam:  # Grad-CAM on the eager model is heavy: off the event loop
                answered = await asyncio.to_thread(
                    self._answer, name, output, contract, prepared, uploads, top_k, explain
                )
            else:
                answered = self._answer(name, output, contract, prepared, uploads, top_k, explain)
            for index, result in zip(prepared.indices, answered, strict=True):
                results[index] = result
        if self.retention is not None and self.retention.enabled and prepared.indices:
            await asyncio.to_thread(self._retain, request_id, uploads, prepared.indices)
        final = [r for r in results if r is not None]
        succeeded = sum(isinstance(r, ImagePrediction) for r in final)
        log.info(
            "prediction %s: %d images, %d answered, %d rejected, model %s v%s, prepare %.1f ms, infer %.1f ms, "
            "total %.1f ms",
            request_id,
            len(uploads),
            succeeded,
            len(final) - succeeded,
            name,
            output.model_version if output else "-",
            (prepared_at - started) * 1e3,
            (inferred_at - prepared_at) * 1e3,
            (time.perf_counter() - started) * 1e3,
        )
        return PredictionResponse(
            request_id=request_id,
            model=name,
            model_version=output.model_version if output else None,
            results=final,
            succeeded=succeeded,
            failed=len(final) - succeeded,
        )

    def _check_pixel_budget(self, uploads: list[Upload]) -> dict[int, ImageError]:
        """Per-image pixel errors from the headers alone; raises :class:`BadRequest` over the request budget."""
        oversized: dict[int, ImageError] = {}
        total = 0
        for index, upload in enumerate(uploads):
            pixels = header_pixels(upload.data)
            if pixels is None:
                continue  # not readable: the full check says why
            if pixels > self.max_pixels:
                oversized[index] = ImageError(
                    file=upload.filename,
                    reason=RejectReason.TOO_LARGE,
                    detail=f"{pixels} pixels exceeds the limit of {self.max_pixels} pixels per image sent for "
                    "prediction (DERMASYNTH_MAX_PREDICTION_IMAGE_PIXELS)",
                )
                continue
            total += pixels
        if self.max_request_pixels is not None and total > self.max_request_pixels:
            raise BadRequest(
                f"the images of this request hold {total} pixels in all, more than the budget of "
                f"{self.max_request_pixels} per request (DERMASYNTH_MAX_PREDICTION_REQUEST_PIXELS); send fewer or "
                "smaller images"
            )
        return oversized

    def _prepare(
        self,
        uploads: list[Upload],
        contract: ServingContract,
        keep_images: bool,
        oversized: dict[int, ImageError] | None = None,
    ) -> _Prepared:
        transform = contract.preprocessing.pixels_transform()
        prepared = _Prepared(results=[None] * len(uploads), pixels=[], indices=[], images=[])
        for index, upload in enumerate(uploads):
            if oversized and index in oversized:
                prepared.results[index] = oversized[index]
                continue
            check, image = decode_checked(upload.data, self.max_pixels)
            if image is None:
                assert check.reason is not None
                prepared.results[index] = ImageError(file=upload.filename, reason=check.reason, detail=check.detail)
                continue
            seen = transform(image).numpy()  # resized and cropped: the full-size image is dropped here
            del image
            prepared.pixels.append(seen)
            prepared.indices.append(index)
            if keep_images:
                prepared.images.append(Image.fromarray(np.ascontiguousarray(seen.transpose(1, 2, 0))))
        return prepared

    def _answer(
        self,
        name: str,
        output: InferenceOutput,
        contract: ServingContract,
        prepared: _Prepared,
        uploads: list[Upload],
        top_k: int,
        explain: bool,
    ) -> list[ImagePrediction]:
        classes = contract.classes
        if contract.calibration is not None:
            probabilities = calibrated_probabilities(output.logits, contract.calibration)
            labels = decide_label(probabilities, contract.calibration, contract.operating_point, classes)
        else:  # a version exported before calibration existed: plain softmax, argmax
            probabilities = softmax(output.logits.astype(np.float64), axis=1)
            labels = probabilities.argmax(axis=1)
        members = prediction_sets(probabilities, contract.conformal) if contract.conformal is not None else None
        malignant = malignant_mask(classes)
        k = min(top_k, len(classes))
        answers = []
        for row, (index, probs, ood) in enumerate(zip(prepared.indices, probabilities, output.ood_scores, strict=True)):
            order = np.argsort(-probs, kind="stable")
            in_set = [int(i) for i in order if members is not None and members[row, i]]
            decision = decide(
                float(probs[order[0]]),
                float(ood),
                contract.abstention,
                [classes[i] for i in in_set],
                MALIGNANT_CLASSES,
                CLASS_NAMES,
            )
            label = int(labels[row])
            png = None
            if explain and output.cams is not None:
                png = cam_png(output.cams[row, label], prepared.pixels[row])
            elif explain and self.explainer is not None:
                png = self.explainer.explain(
                    name, output.model_version, contract.preprocessing, prepared.images[row], label
                )
            answers.append(
                ImagePrediction(
                    file=uploads[index].filename,
                    top_k=[self._class(classes[i], probs[i]) for i in order[:k]],
                    label=classes[label],
                    label_name=CLASS_NAMES.get(classes[label], classes[label]),
                    malignant=bool(malignant[label]) if contract.operating_point is not None else None,
                    malignant_probability=float(probs[malignant].sum()) if malignant.any() else None,
                    prediction_set=[self._class(classes[i], probs[i]) for i in in_set],
                    set_coverage=contract.conformal.coverage if contract.conformal is not None else None,
                    calibrated=contract.calibration is not None,
                    model=name,
                    model_version=output.model_version,
                    abstain=decision.abstain,
                    abstain_reason=decision.reason.value if decision.reason else None,
                    abstain_reasons=[r.value for r in decision.reasons],
                    abstain_detail=decision.detail,
                    ood_score=float(ood),
                    explanation_png=base64.b64encode(png).decode() if png else None,
                )
            )
        return answers

    @staticmethod
    def _class(code: str, probability: float) -> ClassProbability:
        return ClassProbability(label=code, name=CLASS_NAMES.get(code, code), probability=min(1.0, float(probability)))

    def _retain(self, request_id: str, uploads: list[Upload], indices: list[int]) -> None:
        assert self.retention is not None
        for index in indices:
            self.retention.keep(request_id, index, uploads[index].data)
