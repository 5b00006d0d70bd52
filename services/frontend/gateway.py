"""The frontend's only way out: a small client of the gateway's prediction API.

The gateway's address and the clinician's API key default to ``DERMASYNTH_GATEWAY_URL`` and
``DERMASYNTH_API_KEY``; the page lets the user change them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from dermasynth.serving.schemas import PredictionResponse

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


class GatewayError(Exception):
    """The gateway refused the request or could not be reached (``status`` 0)."""

    def __init__(self, status: int, detail: str, reason: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason


@dataclass(frozen=True)
class ImageFile:
    """One image the user picked."""

    name: str
    data: bytes
    mime_type: str = "application/octet-stream"


def default_gateway_url() -> str:
    return os.environ.get("DERMASYNTH_GATEWAY_URL", DEFAULT_GATEWAY_URL)


def default_api_key() -> str:
    return os.environ.get("DERMASYNTH_API_KEY", "")


class PredictionClient:
    """``POST /v1/predictions`` on the gateway at ``base_url`` with ``api_key``."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def predict(self, images: list[ImageFile], *, top_k: int = 3, explain: bool = False) -> PredictionResponse:
        """Predictions for ``images`` (one result per image, in order; unusable ones as error entries).

        Raises:
            GatewayError: no key, unreachable gateway, or a refused request (its status, reason and detail).
        """
        if not self.api_key:
            raise GatewayError(401, "enter the API key an operator issued you", "missing_key")
        files = [("images", (image.name, image.data, image.mime_type)) for image in images]
        try:
            response = httpx.post(
                f"{self.base_url}/v1/predictions",
                files=files,
                params={"top_k": top_k, "explain": str(explain).lower()},
                headers={"X-API-Key": self.api_key},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.base_url}: {exc}", "unreachable") from exc
        try:
            body = response.json()
        except ValueError:
            raise GatewayError(response.status_code, response.text[:500]) from None
        if response.status_code in (200, 422) and "results" in body:
            try:
                return PredictionResponse.model_validate(body)
            except ValidationError as exc:
                raise GatewayError(response.status_code, f"unexpected answer from the gateway: {exc}") from None
        raise GatewayError(response.status_code, str(body.get("detail", body)), str(body.get("reason", "")))
