"""The web app's way out: the shared typed gateway client, with the calls the pages need on top.

The pages never build URLs or headers themselves. The gateway's address comes from the settings
(``DERMASYNTH_GATEWAY_URL``), never from a page; the key is the signed-in person's (or, behind an
identity provider, the web app's service key, with the person named in ``X-DermaSynth-On-Behalf-Of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.gateway_client import GatewayClient, GatewayError
from dermasynth.serving.schemas import LiveModel, ModelVersionInfo, PredictionResponse

ON_BEHALF_OF = "X-DermaSynth-On-Behalf-Of"

__all__ = ["GatewayError", "ImageFile", "ModelDetail", "WebClient"]


@dataclass(frozen=True)
class ImageFile:
    """One image as it is sent: its name, bytes and MIME type."""

    name: str
    data: bytes
    mime_type: str = "application/octet-stream"


class ModelDetail(BaseModel):
    """``GET /v1/models/{name}``: the live version and every registered version."""

    live: LiveModel
    versions: list[ModelVersionInfo]


class _ProgressReader:
    """A file object that reports how many bytes httpx has read from it (upload progress)."""

    def __init__(self, handle: IO[bytes], total: int, on_progress: Callable[[int, int], None]) -> None:
        self.handle, self.total, self.on_progress, self.sent = handle, total, on_progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sent += len(chunk)
        self.on_progress(self.sent, self.total)
        return chunk


def _refusal(response: httpx.Response) -> GatewayError:
    try:
        body = response.json()
        detail, reason = body.get("detail", response.text), body.get("reason", "")
    except ValueError:
        detail, reason = response.text[:500], ""
    return GatewayError(response.status_code, str(detail), str(reason))


class WebClient(GatewayClient):
    """:class:`GatewayClient` plus predictions, models and the other calls of the web app's pages."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        on_behalf_of: str | None = None,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, transport=transport)
        if on_behalf_of:
            self.http.headers[ON_BEHALF_OF] = on_behalf_of

    # -- predictions ---------------------------------------------------------------------------------
    def predict(self, images: list[ImageFile], *, top_k: int = 3, explain: bool = False) -> PredictionResponse:
        """One result per image, in upload order (unusable images as error entries, also when none is usable)."""
        files = [("images", (image.name, image.data, image.mime_type)) for image in images]
        try:
            response = self.http.post(
                "/v1/predictions", files=files, params={"top_k": top_k, "explain": str(explain).lower()}
            )
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.http.base_url}: {exc}", "unreachable") from exc
        if response.status_code in (200, 422):
            try:
                body = response.json()
            except ValueError:
                raise _refusal(response) from None
            if isinstance(body, dict) and "results" in body:
                try:
                    return PredictionResponse.model_validate(body)
                except ValidationError as exc:
                    raise GatewayError(response.status_code, f"unexpected answer: {exc}", "bad_answer") from None
        raise _refusal(response)

    def check_clinician_key(self) -> None:
        """Raise :class:`GatewayError` (401/403) unless the key may ask for predictions; costs no inference.

        The gateway checks the key before it reads the request, so an empty request answers 401/403 for a
        key that may not predict, and 422 (no images) for one that may.
        """
        try:
            response = self.http.post("/v1/predictions")
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.http.base_url}: {exc}", "unreachable") from exc
        if response.status_code != 422:
            raise _refusal(response)

    # -- datasets ------------------------------------------------------------------------------------
    def upload_archive(
        self,
        handle: IO[bytes],
        filename: str,
        name: str,
        *,
        size: int,
        fmt: str = "auto",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> tuple[DatasetInfo, ImportReport]:
        """Upload an open ``.zip``, reporting ``(bytes sent, size)`` as it goes."""
        reader: Any = _ProgressReader(handle, size, on_progress) if on_progress else handle
        body = self._call(
            "POST",
            "/v1/datasets",
            data={"name": name, "format": fmt},
            files={"file": (filename, reader, "application/zip")},
        ).json()
        return DatasetInfo.model_validate(body["dataset"]), ImportReport.model_validate(body["report"])

    def import_report(self, dataset_id: str) -> ImportReport:
        return ImportReport.model_validate(self._call("GET", f"/v1/datasets/{dataset_id}/report").json())

    # -- jobs ----------------------------------------------------------------------------------------
    def job_schemas(self) -> dict[str, Any]:
        """The gateway's OpenAPI document (the job forms are built from its request schemas)."""
        document: dict[str, Any] = self._call("GET", "/openapi.json").json()
        return document

    # -- models --------------------------------------------------------------------------------------
    def models(self) -> list[LiveModel]:
        return TypeAdapter(list[LiveModel]).validate_python(self._call("GET", "/v1/models").json())

    def model(self, name: str) -> ModelDetail:
        return ModelDetail.model_validate(self._call("GET", f"/v1/models/{name}").json())

    def export_model(self, training_job_id: str, name: str = "classifier") -> ModelVersionInfo:
        body = self._call("POST", "/v1/models", json={"training_job_id": training_job_id, "name": name}).json()
        return ModelVersionInfo.model_validate(body)

    def deploy(self, name: str, version: int) -> LiveModel:
        return LiveModel.model_validate(
            self._call("POST", f"/v1/models/{name}/deploy", json={"version": version}).json()
        )

    def rollback(self, name: str, version: int | None = None) -> LiveModel:
        body = {} if version is None else {"version": version}
        return LiveModel.model_validate(self._call("POST", f"/v1/models/{name}/rollback", json=body).json())
