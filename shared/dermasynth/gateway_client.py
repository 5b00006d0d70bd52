"""A typed HTTP client of the gateway's datasets and jobs API, used by the CLI (and usable by any tool).

Every method returns the library's own models; a refused request raises :class:`GatewayError` with the
gateway's status, reason code and message.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
from pydantic import TypeAdapter

from dermasynth.data.archives import write_archive
from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.jobs.records import JobKind, JobPage, JobRecord, JobState, LogPage
from dermasynth.jobs.submission import Artefact


class GatewayError(Exception):
    """The gateway refused a request (or could not be reached: status 0)."""

    def __init__(self, status: int, detail: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason + ': ' if reason else ''}{detail}" if status else detail)
        self.status = status
        self.detail = detail
        self.reason = reason


class GatewayClient:
    """The gateway at ``base_url``, called with ``api_key``."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 300.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.http.base_url}: {exc}") from exc
        if response.is_success:
            return response
        try:
            body = response.json()
            detail, reason = body.get("detail", response.text), body.get("reason", "")
        except ValueError:
            detail, reason = response.text, ""
        raise GatewayError(response.status_code, str(detail), str(reason))

    # -- datasets ----------------------------------------------------------------------------------
    def upload_dataset(
        self,
        source: Path,
        name: str,
        *,
        fmt: str = "auto",
        seed: int = 0,
        val_frac: float = 0.15,
        test_frac: float = 0.15,
    ) -> tuple[DatasetInfo, ImportReport]:
        """Upload a dataset: a ``.zip`` file, or a folder (zipped on the fly)."""
        form = {"name": name, "format": fmt, "seed": str(seed), "val_frac": str(val_frac), "test_frac": str(test_frac)}
        if source.is_dir():
            with tempfile.TemporaryFile() as zipped:
                write_archive(source, zipped)
                zipped.seek(0)
                return self._upload(zipped, f"{source.name}.zip", form)
        with source.open("rb") as handle:
            return self._upload(handle, source.name, form)

    def _upload(self, handle: IO[bytes], filename: str, form: dict[str, str]) -> tuple[DatasetInfo, ImportReport]:
        body = self._call("POST", "/v1/datasets", data=form, files={"file": (filename, handle, "application/zip")})
        created = body.json()
        return DatasetInfo.model_validate(created["dataset"]), ImportReport.model_validate(created["report"])

    def register_dataset(self, prefix: str, name: str, **options: Any) -> tuple[DatasetInfo, ImportReport]:
        """Import a dataset that lies in the object store under ``prefix``."""
        body = self._call("POST", "/v1/datasets/register", json={"prefix": prefix, "name": name, **options}).json()
        return DatasetInfo.model_validate(body["dataset"]), ImportReport.model_validate(body["report"])

    def datasets(self) -> list[DatasetInfo]:
        return TypeAdapter(list[DatasetInfo]).validate_python(self._call("GET", "/v1/datasets").json())

    def dataset(self, dataset_id: str) -> DatasetInfo:
        return DatasetInfo.model_validate(self._call("GET", f"/v1/datasets/{dataset_id}").json())

    # -- jobs --------------------------------------------------------------------------------------
    def submit(self, kind: JobKind | str, params: dict[str, Any]) -> JobRecord:
        """Submit a job; returns at once with the queued job."""
        response = self._call("POST", "/v1/jobs", json={"kind": str(kind), "params": params})
        return JobRecord.model_validate(response.json())

    def job(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate(self._call("GET", f"/v1/jobs/{job_id}").json())

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
        return JobPage.model_validate(self._call("GET", "/v1/jobs", params=query).json())

    def cancel(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate(self._call("POST", f"/v1/jobs/{job_id}/cancel").json())

    def logs(self, job_id: str, since: int = 0) -> LogPage:
        return LogPage.model_validate(self._call("GET", f"/v1/jobs/{job_id}/logs", params={"since": since}).json())

    def artefacts(self, job_id: str) -> list[Artefact]:
        return TypeAdapter(list[Artefact]).validate_python(self._call("GET", f"/v1/jobs/{job_id}/artefacts").json())

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
