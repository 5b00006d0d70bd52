"""The Triton model repository, kept in the object store under ``models/``.

Layout (the one Triton reads, locally from a folder and in compose/Kubernetes from ``s3://``)::

    models/{name}/config.pbtxt              tensors, batching, instances, which versions to serve
    models/{name}/{version}/model.onnx      ONNX graph, opset pinned (see dermasynth.serving.export)
    models/{name}/{version}/contract.json   preprocessing, classes, calibration, conformal sets, abstention, parity
    models/{name}/{version}/eager.pth       state_dict of the eager model (Grad-CAM where the graph has no CAM)

``config.pbtxt`` names the ``onnxruntime`` backend: the official Triton image serves it with its
onnxruntime backend; the local tritonserver (the nvidia-pytriton wheel, Python backend only) with a
Python-based backend of the same name that runs the same ``model.onnx`` through onnxruntime
(``services/inference/backend``). The instance group kind (CPU or GPU) comes from the deploy's
options, else from ``DERMASYNTH_SERVING_INSTANCE_KIND``. The version policy is ``specific``:
deploying writes the versions to serve and asks Triton to load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dermasynth.config import Settings
from dermasynth.serving.contract import CAM_NAME, INPUT_NAME, LOGITS_NAME, OOD_SCORE_NAME, ServingContract
from dermasynth.serving.export import ExportedModel
from dermasynth.storage.base import ObjectNotFound, ObjectStore

REPOSITORY_PREFIX = "models"
MODEL_FILE = "model.onnx"
BACKEND = "onnxruntime"
CONTRACT_FILE = "contract.json"
EAGER_FILE = "eager.pth"
CONFIG_FILE = "config.pbtxt"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def check_model_name(name: str) -> str:
    """Return ``name`` if it can name a Triton model here, else raise ValueError saying what is accepted."""
    if not _NAME.match(name):
        raise ValueError(
            f"model name {name!r} is not accepted: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


class BatchingOptions(BaseModel):
    """How Triton schedules one model: batch sizes, queueing, instances and threads."""

    model_config = ConfigDict(frozen=True)

    max_batch_size: int = Field(default=32, ge=1, le=1024)
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = Field(
        default=2000, ge=0, le=1_000_000, description="how long a request may wait for others to join its batch"
    )
    instance_kind: Literal["cpu", "gpu"] | None = Field(
        default=None, description="None: the server's DERMASYNTH_SERVING_INSTANCE_KIND"
    )
    instance_count: int = Field(default=1, ge=1, le=64)
    intra_op_threads: int = Field(
        default=0, ge=0, le=256, description="onnxruntime threads per instance; 0: onnxruntime's default"
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> BatchingOptions:
        bad = [size for size in self.preferred_batch_sizes if not 1 <= size <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred batch sizes {bad} must lie in 1..max_batch_size ({self.max_batch_size})")
        return self

    def changed(self, changes: BatchingChanges) -> BatchingOptions:
        """These options with the fields ``changes`` sets; preferred sizes above a lowered maximum are dropped.

        Raises:
            pydantic.ValidationError: when the result is not valid (e.g. preferred sizes above the maximum).
        """
        update = changes.model_dump(exclude_unset=True, exclude_none=True)
        if "max_batch_size" in update and "preferred_batch_sizes" not in update:
            update["preferred_batch_sizes"] = tuple(
                size for size in self.preferred_batch_sizes if size <= update["max_batch_size"]
            )
        return BatchingOptions.model_validate({**self.model_dump(), **update})


class BatchingChanges(BaseModel):
    """Some of :class:`BatchingOptions`: a deploy changes these and keeps the last deploy's others."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(default=None, ge=1, le=1024)
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_us: int | None = Field(default=None, ge=0, le=1_000_000)
    instance_kind: Literal["cpu", "gpu"] | None = None
    instance_count: int | None = Field(default=None, ge=1, le=64)
    intra_op_threads: int | None = Field(default=None, ge=0, le=256)


def render_config(
    name: str,
    versions: list[int],
    options: BatchingOptions,
    warmup_image_size: int | None = None,
    *,
    num_classes: int | None = None,
    cam: bool = False,
    default_kind: Literal["cpu", "gpu"] = "cpu",
) -> str:
    """The ``config.pbtxt`` that serves ``versions`` of ``name``.

    Image sides are variable (-1; the ONNX graph's are symbolic) so versions trained at other sizes
    can be served side by side during a deploy; the class count is ``num_classes`` when the served
    versions agree on it, else -1. ``cam`` adds the class-activation-map output (every served version
    must have it). With ``warmup_image_size``, Triton runs two blank images through each instance
    before it calls the model ready, so the first real request does not pay onnxruntime's first run.
    """
    check_model_name(name)
    if not versions:
        raise ValueError(f"model {name!r}: at least one version must be served")
    kind = "KIND_GPU" if (options.instance_kind or default_kind) == "gpu" else "KIND_CPU"
    classes = num_classes or -1
    preferred = ", ".join(str(s) for s in options.preferred_batch_sizes)
    lines = [
        f'name: "{name}"',
        f'backend: "{BACKEND}"',
        f"max_batch_size: {options.max_batch_size}",
        f"version_policy: {{ specific: {{ versions: [ {', '.join(str(v) for v in sorted(versions))} ] }} }}",
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [ 3, -1, -1 ] }} ]',
        "output [",
        f'  {{ name: "{LOGITS_NAME}" data_type: TYPE_FP32 dims: [ {classes} ] }},',
        f'  {{ name: "{OOD_SCORE_NAME}" data_type: TYPE_FP32 dims: [ 1 ] }}' + ("," if cam else ""),
        *([f'  {{ name: "{CAM_NAME}" data_type: TYPE_FP32 dims: [ {classes}, -1, -1 ] }}'] if cam else []),
        "]",
        "dynamic_batching {",
        *([f"  preferred_batch_size: [ {preferred} ]"] if preferred else []),
        f"  max_queue_delay_microseconds: {options.max_queue_delay_us}",
        "}",
        f"instance_group [ {{ kind: {kind} count: {options.instance_count} }} ]",
    ]
    if warmup_image_size:
        lines.append(
            f'model_warmup [ {{ name: "blank" batch_size: 1 count: 2 inputs {{ key: "{INPUT_NAME}" value: '
            f"{{ data_type: TYPE_UINT8 dims: [ 3, {warmup_image_size}, {warmup_image_size} ] "
            "zero_data: true } } } ]"
        )
    if options.intra_op_threads:
        lines.append(
            f'parameters: {{ key: "intra_op_thread_count" value: {{ string_value: "{options.intra_op_threads}" }} }}'
        )
        lines.append('parameters: { key: "inter_op_thread_count" value: { string_value: "1" } }')
    return "\n".join(lines) + "\n"


class ModelRepository:
    """Model versions and their Triton configuration in an object store."""

    def __init__(self, store: ObjectStore, prefix: str = REPOSITORY_PREFIX) -> None:
        self.store = store
        self.prefix = prefix

    def _key(self, name: str, *parts: str | int) -> str:
        return "/".join([self.prefix, check_model_name(name), *(str(p) for p in parts)])

    def versions(self, name: str) -> list[int]:
        """The versions with a stored model, ascending."""
        found = set()
        for key in self.store.list(self._key(name) + "/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[2].isdigit() and parts[3] == MODEL_FILE:
                found.add(int(parts[2]))
        return sorted(found)

    def models(self) -> list[str]:
        """Names of the models with at least one config or version."""
        return sorted({key.split("/")[1] for key in self.store.list(self.prefix + "/") if key.count("/") >= 2})

    def add_version(self, name: str, exported: ExportedModel) -> int:
        """Store an exported model as the next version of ``name``; returns the version number.

        The model file is written last, so a version is listed only once all its files are there.
        """
        version = max(self.versions(name), default=0) + 1
        self.store.put_bytes(
            self._key(name, version, CONTRACT_FILE),
            exported.contract.model_dump_json(indent=2).encode(),
            "application/json",
        )
        self.store.put_bytes(self._key(name, version, EAGER_FILE), exported.eager_state)
        self.store.put_bytes(self._key(name, version, MODEL_FILE), exported.onnx)
        return version

    def contract(self, name: str, version: int) -> ServingContract:
        """The contract of a stored version. Raises :class:`ObjectNotFound` for an unknown version."""
        return ServingContract.model_validate_json(self.store.get_bytes(self._key(name, version, CONTRACT_FILE)))

    def eager_state(self, name: str, version: int) -> bytes:
        """The eager model's state_dict bytes of a stored version."""
        return self.store.get_bytes(self._key(name, version, EAGER_FILE))

    def write_config(
        self, name: str, versions: list[int], options: BatchingOptions, default_kind: Literal["cpu", "gpu"] = "cpu"
    ) -> str:
        """Write ``config.pbtxt`` serving ``versions``; returns its text.

        Raises:
            ObjectNotFound: if one of the versions is not stored.
        """
        stored = set(self.versions(name))
        missing = sorted(set(versions) - stored)
        if missing:
            raise ObjectNotFound(self._key(name, missing[0], MODEL_FILE))
        contracts = [self.contract(name, v) for v in versions]
        class_counts = {len(c.classes) for c in contracts}
        text = render_config(
            name,
            versions,
            options,
            warmup_image_size=contracts[versions.index(max(versions))].preprocessing.image_size,
            num_classes=class_counts.pop() if len(class_counts) == 1 else None,
            cam=all(c.has_cam for c in contracts),
            default_kind=default_kind,
        )
        self.store.put_bytes(self._key(name, CONFIG_FILE), text.encode(), "text/plain")
        return text

    def config_text(self, name: str) -> str | None:
        """The current ``config.pbtxt``, or None before the first deploy."""
        try:
            return self.store.get_bytes(self._key(name, CONFIG_FILE)).decode()
        except ObjectNotFound:
            return None


def repository_location(settings: Settings) -> str:
    """Where a tritonserver finds the repository: ``s3://host:port/bucket/models`` or a local folder.

    With the filesystem store the repository folder is the store's own ``models/`` folder: the store
    is a folder, so Triton reads what the store wrote, with no copy.
    """
    if settings.store == "s3":
        return f"s3://{settings.s3_endpoint}/{settings.s3_bucket}/{REPOSITORY_PREFIX}"
    return str((settings.store_root / REPOSITORY_PREFIX).resolve())


def sync_repository(store: ObjectStore, dest: Path, prefix: str = REPOSITORY_PREFIX) -> list[str]:
    """Mirror the repository into a local folder (for a Triton that cannot reach the store).

    Files whose size differs, and every ``config.pbtxt`` and ``contract.json``, are downloaded;
    files no longer in the store are removed. Returns the keys downloaded.
    """
    keys = store.list(prefix + "/")
    fetched = []
    for key in keys:
        target = dest / key[len(prefix) + 1 :]
        small = key.endswith((CONFIG_FILE, CONTRACT_FILE))
        if small or not target.is_file() or target.stat().st_size != store.size(key):
            tmp = target.with_name(f".sync-{target.name}")
            store.get_file(key, tmp)
            tmp.replace(target)
            fetched.append(key)
    wanted = {dest / key[len(prefix) + 1 :] for key in keys}
    for path in dest.rglob("*"):
        if path.is_file() and path not in wanted:
            path.unlink()
    return fetched
