"""Talking to the inference server: a small interface and its Triton implementation.

:class:`InferenceClient` is what the prediction logic and deployments need; :class:`TritonClient`
implements it over Triton's KServe v2 HTTP API with ``tritonclient.http.aio``, so many requests can
be in flight at once from one event loop and Triton's dynamic batcher can group them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from dermasynth.serving.contract import CAM_NAME, INPUT_NAME, LOGITS_NAME, OOD_SCORE_NAME


class InferenceUnavailable(RuntimeError):
    """The inference server cannot answer now (down, unreachable, or the model is not loaded)."""


class VersionUnavailable(InferenceUnavailable):
    """The server is up but the requested model version is not loaded (e.g. just rolled back)."""


class InferenceFailed(RuntimeError):
    """The server answered the request with an error."""


@dataclass(frozen=True)
class InferenceOutput:
    """Raw model outputs for a batch: logits (N, C), OOD scores (N,), the version that answered, and the
    class-activation maps (N, C, h, w) when they were asked for."""

    logits: np.ndarray
    ood_scores: np.ndarray
    model_version: int
    cams: np.ndarray | None = None


class InferenceClient(Protocol):
    """What DermaSynth needs from an inference server."""

    async def infer(self, model: str, version: int, pixels: np.ndarray, cam: bool = False) -> InferenceOutput:
        """Run ``version`` of ``model`` on uint8 pixels (N, 3, S, S); ``cam``: also the class-activation maps."""
        ...

    async def server_ready(self) -> bool:
        """Whether the server is up and ready; never raises."""
        ...

    async def model_ready(self, model: str, version: int) -> bool:
        """Whether ``version`` of ``model`` is loaded and ready; never raises."""
        ...

    async def load_model(self, model: str) -> None:
        """(Re)load ``model`` from the repository, serving the versions its config names."""
        ...

    async def statistics(self, model: str) -> dict[str, Any]:
        """The server's inference statistics of ``model`` (Triton's statistics extension)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# Triton started with --http-restricted-api=model-repository,...:triton-admin-key=<key> (compose, Kubernetes)
# answers its model-control API only to requests carrying this header (issue 15).
ADMIN_HEADER = "triton-admin-key"

_CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
_NOT_LOADED = ("unknown model", "is not found", "not ready", "unavailable", "is not at ready state")


class TritonClient:
    """:class:`InferenceClient` over Triton's HTTP API.

    Create it inside the event loop that uses it (aiohttp sessions belong to one loop).

    Args:
        url: ``host:port`` of Triton's HTTP endpoint.
        timeout_s: total time allowed for one call.
        max_connections: connections kept to Triton (bounds requests in flight).
        admin_key: sent as the ``triton-admin-key`` header on model-control calls (load), which a Triton
            with restricted model control refuses without it.
    """

    def __init__(
        self, url: str, timeout_s: float = 30.0, max_connections: int = 256, admin_key: str | None = None
    ) -> None:
        self.url = url
        self._admin_headers = {ADMIN_HEADER: admin_key} if admin_key else None
        self._client = InferenceServerClient(url, conn_limit=max_connections, conn_timeout=timeout_s)
        self._outputs = [
            InferRequestedOutput(LOGITS_NAME, binary_data=True),
            InferRequestedOutput(OOD_SCORE_NAME, binary_data=True),
        ]
        self._with_cam = [*self._outputs, InferRequestedOutput(CAM_NAME, binary_data=True)]

    async def infer(self, model: str, version: int, pixels: np.ndarray, cam: bool = False) -> InferenceOutput:
        """Run one batch; raises :class:`InferenceUnavailable`, :class:`VersionUnavailable` or
        :class:`InferenceFailed`."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be uint8 (N, 3, S, S), got {pixels.dtype} {pixels.shape}")
        tensor = InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=True)
        try:
            outputs = self._with_cam if cam else self._outputs
            result = await self._client.infer(model, [tensor], model_version=str(version), outputs=outputs)
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            if any(marker in message.lower() for marker in _NOT_LOADED):
                raise VersionUnavailable(
                    f"model {model!r} version {version} is not loaded on Triton at {self.url}: {message}"
                ) from exc
            raise InferenceFailed(f"Triton at {self.url} failed the request: {message}") from exc
        except _CONNECTION_ERRORS as exc:
            raise InferenceUnavailable(f"Triton at {self.url} is not reachable: {exc!r}") from exc
        logits, ood = result.as_numpy(LOGITS_NAME), result.as_numpy(OOD_SCORE_NAME)
        if logits is None or ood is None:
            raise InferenceFailed(f"Triton at {self.url} returned no {LOGITS_NAME}/{OOD_SCORE_NAME} outputs")
        cams = result.as_numpy(CAM_NAME) if cam else None
        if cam and cams is None:
            raise InferenceFailed(f"Triton at {self.url} returned no {CAM_NAME} output")
        answered = result.get_response().get("model_version", version)
        return InferenceOutput(logits=logits, ood_scores=ood.reshape(-1), model_version=int(answered), cams=cams)

    async def server_ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready())
        except (*_CONNECTION_ERRORS, InferenceServerException):
            return False

    async def model_ready(self, model: str, version: int) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, str(version)))
        except (*_CONNECTION_ERRORS, InferenceServerException):
            return False

    async def load_model(self, model: str) -> None:
        try:
            await self._client.load_model(model, headers=self._admin_headers)
        except InferenceServerException as exc:
            raise InferenceFailed(f"Triton at {self.url} could not load {model!r}: {exc.message()}") from exc
        except _CONNECTION_ERRORS as exc:
            raise InferenceUnavailable(f"Triton at {self.url} is not reachable: {exc!r}") from exc

    async def statistics(self, model: str) -> dict[str, Any]:
        try:
            stats: dict[str, Any] = await self._client.get_inference_statistics(model)
        except InferenceServerException as exc:
            raise InferenceFailed(f"Triton at {self.url} has no statistics for {model!r}: {exc.message()}") from exc
        except _CONNECTION_ERRORS as exc:
            raise InferenceUnavailable(f"Triton at {self.url} is not reachable: {exc!r}") from exc
        return stats

    async def close(self) -> None:
        await self._client.close()
