"""The one typed HTTP client of the gateway: datasets, jobs, models and predictions.

The CLI's HTTP commands and the Streamlit frontend both use it. It sends the API key as ``X-API-Key``,
returns the library's own pydantic models, and turns every refusal into one error type,
:class:`GatewayError` (status, reason, detail). It imports only httpx, pydantic and the library's
schema modules, so it works in a client-only install (``pip install 'dermasynth[client]'``: no torch,
no Redis, no image library).

Errors are read in either of the gateway's shapes: ``{"detail": ..., "reason": ...}`` and RFC 9457
``application/problem+json`` (``type: https://dermasynth.dev/problems/{reason}``); FastAPI's own
validation errors (``detail`` a list) are flattened to ``field: message`` text.
"""

from __future__ import annotations

import json
import mimetypes
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from dermasynth import __version__
from dermasynth.config import Settings
from dermasynth.data.archives import write_archive
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.jobs.records import JobKind, JobPage, JobRecord, JobState, LogPage
from dermasynth.jobs.schemas import Artefact, JobSubmission
from dermasynth.serving.schemas import LiveModel, ModelDetail, ModelVersionInfo, PredictionResponse

API_KEY_HEADER = "X-API-Key"
ON_BEHALF_OF_HEADER = "X-DermaSynth-On-Behalf-Of"
ENV_GATEWAY_URL = "DERMASYNTH_GATEWAY_URL"
ENV_API_KEY = "DERMASYNTH_API_KEY"
DEFAULT_GATEWAY_URL: str = Settings.model_fields["gateway_url"].default
"""The settings' default (one home for it): a gateway on this machine."""
DEFAULT_TIMEOUT_S = 300.0
"""Uploads of large datasets and predictions with heat maps take a while; a read waits at most this long."""

PROBLEM_TYPE_PREFIX = "https://dermasynth.dev/problems/"
UNREACHABLE = "unreachable"
MISSING_KEY = "missing_key"
BAD_ANSWER = "bad_answer"
INGEST_FAILED = "ingest_failed"
M = TypeVar("M", bound=BaseModel)

_REASON_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


class GatewayError(Exception):
    """The gateway refused a request, could not be reached (``status`` 0) or answered nonsense.

    ``reason`` is a stable snake_case code (the gateway's, or ``unreachable``, ``missing_key``,
    ``bad_answer``, or the status's name when the gateway sent none); ``detail`` says what was wrong.
    ``body`` keeps the rest of the gateway's error body (e.g. the import report of a refused upload).
    """

    def __init__(self, status: int, reason: str, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {detail}" if status else f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.body = body or {}


@dataclass(frozen=True)
class ImageFile:
    """One image to send for prediction."""

    name: str
    data: bytes
    mime_type: str = "application/octet-stream"

    @classmethod
    def read(cls, path: Path) -> ImageFile:
        """The file at ``path``, named by its file name, its type guessed from the extension."""
        return cls(path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def _detail_text(detail: object) -> str:
    """A readable message from an error body's ``detail``: text as is, validation errors as ``field: msg``."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and all(isinstance(item, dict) and "msg" in item for item in detail):
        parts = []
        for item in detail:
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path"))
            parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
        return "; ".join(parts)
    return json.dumps(detail)


def error_of(response: httpx.Response) -> GatewayError:
    """The :class:`GatewayError` a refused response stands for, whatever shape its body has."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:500] or response.reason_phrase
        return GatewayError(status, _REASON_OF_STATUS.get(status, "http_error"), text)
    reason = body.get("reason")
    problem_type = body.get("type")
    if not reason and isinstance(problem_type, str) and problem_type.startswith(PROBLEM_TYPE_PREFIX):
        reason = problem_type.removeprefix(PROBLEM_TYPE_PREFIX)
    detail = body.get("detail", body.get("title", ""))
    extra = {k: v for k, v in body.items() if k not in ("detail", "reason")}
    return GatewayError(
        status, str(reason or _REASON_OF_STATUS.get(status, "http_error")), _detail_text(detail) or str(status), extra
    )


def _parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise GatewayError(
            response.status_code, BAD_ANSWER, f"unexpected answer to {response.request.url.path}: {exc}"
        ) from None


def _parse_list(model: type[M], response: httpx.Response) -> list[M]:
    try:
        return TypeAdapter(list[model]).validate_python(response.json())  # type: ignore[valid-type]
    except (ValueError, ValidationError) as exc:
        raise GatewayError(
            response.status_code, BAD_ANSWER, f"unexpected answer to {response.request.url.path}: {exc}"
        ) from None


class GatewayClient:
    """The gateway at ``base_url``, called with ``api_key`` (sent as ``X-API-Key``).

    Use it as a context manager, or call :meth:`close`. Every method raises :class:`GatewayError` when
    the gateway refuses the request or cannot be reached.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_GATEWAY_URL,
        api_key: str = "",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        on_behalf_of: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        headers = {"User-Agent": f"dermasynth/{__version__}"}
        if api_key:
            headers[API_KEY_HEADER] = api_key
        if on_behalf_of:  # a service key (the web app behind an identity provider) names the person it acts for
            headers[ON_BEHALF_OF_HEADER] = on_behalf_of
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response, whatever its status; GatewayError only when no answer came (or no key is set)."""
        if not self.api_key and path.startswith("/v1/") and not path.startswith("/v1/health"):
            raise GatewayError(
                401,
                MISSING_KEY,
                f"no API key: set {ENV_API_KEY} (or pass it) to a key an operator issued with `dermasynth keys create`",
            )
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(0, UNREACHABLE, f"cannot reach the gateway at {self.base_url}: {exc}") from exc

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of a request that succeeded (2xx); GatewayError otherwise."""
        response = self._send(method, path, **kwargs)
        if not response.is_success:
            raise error_of(response)
        return response

    # -- health --------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict[str, str]]:
        """Whether the gateway's backends answer (``GET /v1/health/ready``), and each check's detail
        (backend name -> ``ok`` or the problem; the gateway names them to admin keys only)."""
        response = self._send("GET", "/v1/health/ready")
        if response.status_code not in (200, 503):
            raise error_of(response)
        checks = response.json().get("checks") or {}
        return response.status_code == 200, {str(k): str(v) for k, v in checks.items()}

    def openapi(self) -> dict[str, Any]:
        """The gateway's OpenAPI document (the web app builds its job forms from the request schemas)."""
        document: dict[str, Any] = self._call("GET", "/openapi.json").json()
        return document

    def check_clinician_key(self) -> None:
        """Raise :class:`GatewayError` (401/403) unless the key may ask for predictions; costs no inference.

        The gateway checks the key before it reads the request: an empty request answers 401/403 for a key
        that may not predict, and 400/422 (no images) for one that may.
        """
        response = self._send("POST", "/v1/predictions")
        if response.status_code not in (400, 422):
            raise error_of(response)

    # -- datasets ------------------------------------------------------------------------------------
    # Upload and register answer 202 with an ``ingest`` job: ``start_*`` return it at once; the others
    # wait for it and return the new dataset with its import report, or raise the job's failure.
    def start_upload(
        self,
        source: Path,
        name: str,
        *,
        fmt: str = "auto",
        seed: int = 0,
        val_frac: float = 0.15,
        test_frac: float = 0.15,
        idempotency_key: str | None = None,
    ) -> JobRecord:
        """Upload a dataset (a ``.zip`` file, or a folder zipped on the fly); returns the queued ingest job."""
        form = {"name": name, "format": fmt, "seed": str(seed), "val_frac": str(val_frac), "test_frac": str(test_frac)}
        if source.is_dir():
            with tempfile.TemporaryFile() as zipped:
                write_archive(source, zipped)
                zipped.seek(0)
                return self._upload(zipped, f"{source.name}.zip", form, idempotency_key)
        with source.open("rb") as handle:
            return self._upload(handle, source.name, form, idempotency_key)

    def upload_dataset(
        self,
        source: Path,
        name: str,
        *,
        fmt: str = "auto",
        seed: int = 0,
        val_frac: float = 0.15,
        test_frac: float = 0.15,
        on_update: Callable[[JobRecord], None] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[DatasetInfo, ImportReport]:
        """Upload a dataset and wait for its ingest job; the new dataset and its import report.

        Raises:
            GatewayError: the upload was refused, or its job failed (reason ``ingest_failed``, the job's error).
        """
        job = self.start_upload(source, name, fmt=fmt, seed=seed, val_frac=val_frac, test_frac=test_frac)
        return self.ingested(self.wait(job.id, timeout_s=timeout_s, on_update=on_update))

    def _upload(
        self, handle: IO[bytes], filename: str, form: dict[str, str], idempotency_key: str | None = None
    ) -> JobRecord:
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = self._call(
            "POST", "/v1/datasets", data=form, files={"file": (filename, handle, "application/zip")}, headers=headers
        )
        return _parse(JobRecord, response)

    def start_upload_archive(
        self,
        handle: IO[bytes],
        filename: str,
        name: str,
        *,
        size: int,
        fmt: str = "auto",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> JobRecord:
        """Upload an open ``.zip`` of ``size`` bytes, calling ``on_progress(sent, size)`` as it is read;
        returns the queued ingest job."""
        reader: Any = _ProgressReader(handle, size, on_progress) if on_progress else handle
        return self._upload(reader, filename, {"name": name, "format": fmt})

    def upload_archive(
        self,
        handle: IO[bytes],
        filename: str,
        name: str,
        *,
        size: int,
        fmt: str = "auto",
        on_progress: Callable[[int, int], None] | None = None,
        on_update: Callable[[JobRecord], None] | None = None,
    ) -> tuple[DatasetInfo, ImportReport]:
        """:meth:`start_upload_archive`, then wait for the job (``on_update`` sees each poll)."""
        job = self.start_upload_archive(handle, filename, name, size=size, fmt=fmt, on_progress=on_progress)
        return self.ingested(self.wait(job.id, on_update=on_update))

    def import_report(self, dataset_id: str) -> ImportReport:
        """The per-file report of an uploaded or registered dataset (404 for one a job made)."""
        return _parse(ImportReport, self._call("GET", f"/v1/datasets/{dataset_id}/report"))

    def start_register(self, prefix: str, name: str, **options: Any) -> JobRecord:
        """Import a dataset that lies in the object store under ``prefix``; returns the queued ingest job."""
        response = self._call("POST", "/v1/datasets/register", json={"prefix": prefix, "name": name, **options})
        return _parse(JobRecord, response)

    def register_dataset(
        self, prefix: str, name: str, *, on_update: Callable[[JobRecord], None] | None = None, **options: Any
    ) -> tuple[DatasetInfo, ImportReport]:
        """:meth:`start_register`, then wait for the job; the new dataset and its import report."""
        job = self.start_register(prefix, name, **options)
        return self.ingested(self.wait(job.id, on_update=on_update))

    def ingested(self, job: JobRecord) -> tuple[DatasetInfo, ImportReport]:
        """The dataset and import report of a finished ingest job.

        Raises:
            GatewayError: the job failed or was cancelled (reason ``ingest_failed``; detail: the job's error).
        """
        if job.state != JobState.SUCCEEDED:
            raise GatewayError(
                422,
                INGEST_FAILED,
                f"ingest job {job.id} {job.state.value}: {job.error or 'no reason recorded'}",
                body=job.model_dump(mode="json"),
            )
        dataset_id = job.result.get("dataset_id")
        if not isinstance(dataset_id, str):
            raise GatewayError(200, BAD_ANSWER, f"ingest job {job.id} succeeded without naming its dataset")
        return self.dataset(dataset_id), self.import_report(dataset_id)

    def datasets(self) -> list[DatasetInfo]:
        return _parse_list(DatasetInfo, self._call("GET", "/v1/datasets"))

    def dataset(self, dataset_id: str) -> DatasetInfo:
        return _parse(DatasetInfo, self._call("GET", f"/v1/datasets/{dataset_id}"))

    # -- jobs ----------------------------------------------------------------------------------------
    def submit(self, kind: JobKind | str, params: dict[str, Any]) -> JobRecord:
        """Submit a job; returns at once with the queued job."""
        body = JobSubmission.model_validate({"kind": kind, "params": params}).model_dump(mode="json")
        return _parse(JobRecord, self._call("POST", "/v1/jobs", json=body))

    def job(self, job_id: str) -> JobRecord:
        return _parse(JobRecord, self._call("GET", f"/v1/jobs/{job_id}"))

    def jobs(
        self,
        *,
        state: JobState | str | None = None,
        kind: JobKind | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobPage:
        query: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            query["state"] = str(state)
        if kind:
            query["kind"] = str(kind)
        return _parse(JobPage, self._call("GET", "/v1/jobs", params=query))

    def cancel(self, job_id: str) -> JobRecord:
        return _parse(JobRecord, self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def logs(self, job_id: str, since: int = 0) -> LogPage:
        return _parse(LogPage, self._call("GET", f"/v1/jobs/{job_id}/logs", params={"since": since}))

    def artefacts(self, job_id: str) -> list[Artefact]:
        return _parse_list(Artefact, self._call("GET", f"/v1/jobs/{job_id}/artefacts"))

    def download(self, job_id: str, path: str) -> bytes:
        return self._call("GET", f"/v1/jobs/{job_id}/artefacts/{path}").content

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_update: Callable[[JobRecord], None] | None = None,
    ) -> JobRecord:
        """Poll until the job is final (or ``timeout_s`` passes: TimeoutError); ``on_update`` sees each poll."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            record = self.job(job_id)
            if on_update is not None:
                on_update(record)
            if record.terminal:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {record.state.value} after {timeout_s} s")
            time.sleep(poll_s)

    # -- models --------------------------------------------------------------------------------------
    def models(self) -> list[LiveModel]:
        """Every model and its live version."""
        return _parse_list(LiveModel, self._call("GET", "/v1/models"))

    def model(self, name: str) -> ModelDetail:
        """A model's live version and all its versions with lineage."""
        return _parse(ModelDetail, self._call("GET", f"/v1/models/{name}"))

    def model_version(self, name: str, version: int) -> ModelVersionInfo:
        return _parse(ModelVersionInfo, self._call("GET", f"/v1/models/{name}/versions/{version}"))

    def export_model(
        self,
        training_job_id: str,
        *,
        name: str = "classifier",
        which: str | None = None,
        min_probability: float | None = None,
        ood_quantile: float | None = None,
    ) -> ModelVersionInfo | JobRecord:
        """Export a succeeded training job's model as a new version of ``name`` (not live until deployed).

        Options left at None take the gateway's defaults. Returns the new version when the gateway
        exported it at once (200/201), or the queued export job when it answers 202 (then :meth:`wait` on
        it; its result names the version).
        """
        options = {"which": which, "min_probability": min_probability, "ood_quantile": ood_quantile}
        request: dict[str, Any] = {"training_job_id": training_job_id, "name": name}
        request.update({k: v for k, v in options.items() if v is not None})
        response = self._call("POST", "/v1/models", json=request)
        if response.status_code != 202:
            return _parse(ModelVersionInfo, response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("job"), dict):
            body = body["job"]
        if isinstance(body, dict) and {"id", "kind", "state"} <= body.keys():
            try:
                return JobRecord.model_validate(body)
            except ValidationError:
                pass
        job_id = (body.get("job_id") or body.get("id")) if isinstance(body, dict) else None
        if not job_id:
            raise GatewayError(202, BAD_ANSWER, f"an accepted export named no job: {str(body)[:300]}")
        return self.job(str(job_id))

    def deploy(self, name: str, version: int, batching: dict[str, Any] | None = None) -> LiveModel:
        """Make ``version`` live (with new batching options, else the last deploy's); returns the live model."""
        body: dict[str, Any] = {"version": version}
        if batching is not None:
            body["batching"] = batching
        return _parse(LiveModel, self._call("POST", f"/v1/models/{name}/deploy", json=body))

    def rollback(self, name: str, version: int | None = None) -> LiveModel:
        """Make the version live before the current one (or ``version``) live again."""
        return _parse(LiveModel, self._call("POST", f"/v1/models/{name}/rollback", json={"version": version}))

    # -- predictions ---------------------------------------------------------------------------------
    def predict(
        self, images: Sequence[ImageFile], *, top_k: int = 3, explain: bool = False, model: str | None = None
    ) -> PredictionResponse:
        """Predictions for ``images``: one result per image, in order; unusable ones as error entries.

        The gateway answers 422 with the same body when no image could be used: that is returned too
        (``succeeded == 0``), so a caller shows each image's reason.
        """
        query: dict[str, Any] = {"top_k": top_k, "explain": str(explain).lower()}
        if model:
            query["model"] = model
        files = [("images", (image.name, image.data, image.mime_type)) for image in images]
        response = self._send("POST", "/v1/predictions", files=files, params=query)
        if response.status_code == 200 or (response.status_code == 422 and _has_results(response)):
            return _parse(PredictionResponse, response)
        raise error_of(response)


class _ProgressReader:
    """A file object that reports how many bytes httpx has read from it (upload progress)."""

    def __init__(self, handle: IO[bytes], total: int, on_progress: Callable[[int, int], None]) -> None:
        self.handle, self.total, self.on_progress, self.sent = handle, total, on_progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sent += len(chunk)
        self.on_progress(self.sent, self.total)
        return chunk


def _has_results(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "results" in body
