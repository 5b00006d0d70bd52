"""Model versions with lineage, the live version, and deployments without dropped requests.

Records live in the object store beside the Triton repository::

    registry/{name}/versions/{version}.json   ModelVersionInfo: architecture, classes, lineage, policy
    registry/{name}/live.json                 which version serves, how it is batched, and the history

A deploy (or rollback) never leaves a moment without a loaded model: Triton is first asked to serve
both the live and the new version, the live pointer moves once the new one is ready, and the old
version is dropped only after ``settle_s``, when every gateway has picked up the new pointer (they
re-read it at least every :data:`LIVE_REFRESH_S` and on any "version not loaded" answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from dermasynth.serving.export import ExportedModel
from dermasynth.serving.inference_client import InferenceClient, InferenceUnavailable
from dermasynth.serving.model_repository import BatchingOptions, ModelRepository, check_model_name
from dermasynth.serving.schemas import LiveModel, ModelDeployment, ModelLineage, ModelVersionInfo
from dermasynth.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "registry"
LIVE_REFRESH_S = 1.0
DEFAULT_SETTLE_S = 3.0


class UnknownModel(LookupError):
    """No such model or version in the registry."""


class _LiveState(BaseModel):
    version: int | None = None
    options: BatchingOptions = Field(default_factory=BatchingOptions)
    history: list[ModelDeployment] = Field(default_factory=list)


class ModelRegistry:
    """Versions, lineage and the live pointer of served models, in an object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.repository = ModelRepository(store)

    def _key(self, name: str, *parts: str) -> str:
        return "/".join([REGISTRY_PREFIX, check_model_name(name), *parts])

    def register(
        self, name: str, exported: ExportedModel, lineage: ModelLineage, owner: str = "default"
    ) -> ModelVersionInfo:
        """Store ``exported`` as the next version of ``name`` (not yet live) for ``owner``, with its lineage."""
        version = self.repository.add_version(name, exported)
        contract = exported.contract
        info = ModelVersionInfo(
            name=name,
            version=version,
            created_at=datetime.now(UTC),
            architecture=contract.architecture,
            classes=list(contract.classes),
            image_size=contract.preprocessing.image_size,
            min_probability=contract.abstention.min_probability,
            ood_threshold=contract.abstention.ood_threshold,
            temperature=contract.calibration.temperature if contract.calibration else None,
            set_coverage=contract.conformal.coverage if contract.conformal else None,
            malignant_threshold=contract.operating_point.threshold if contract.operating_point else None,
            lineage=lineage,
            owner=owner,
        )
        self.store.put_bytes(
            self._key(name, "versions", f"{version}.json"), info.model_dump_json(indent=2).encode(), "application/json"
        )
        log.info("registered model %s version %d (run %s)", name, version, lineage.run)
        return info

    def owner(self, name: str) -> str | None:
        """The owner of model ``name``: its first version's (None when nothing is registered)."""
        versions = self.versions(name)
        return versions[0].owner if versions else None

    def ownerless(self) -> list[tuple[str, int]]:
        """(model, version) of every version registered before owners existed (no ``owner`` in its record)."""
        found = []
        for name in self.names():
            for key in self.store.list(self._key(name, "versions") + "/"):
                stored = json.loads(self.store.get_bytes(key))
                if "owner" not in stored:
                    found.append((name, int(stored["version"])))
        return sorted(found)

    def assign_owner(self, name: str, version: int, owner: str) -> ModelVersionInfo:
        """Give a version registered before owners existed to ``owner``.

        Raises:
            UnknownModel: no such version.
            ValueError: the version already has an owner.
        """
        key = self._key(name, "versions", f"{version}.json")
        try:
            stored = json.loads(self.store.get_bytes(key))
        except ObjectNotFound:
            raise UnknownModel(f"model {name!r} has no version {version}") from None
        if "owner" in stored:
            raise ValueError(f"model {name!r} version {version} already belongs to owner {stored['owner']!r}")
        info = ModelVersionInfo.model_validate({**stored, "owner": owner})
        self.store.put_bytes(key, info.model_dump_json(indent=2).encode(), "application/json")
        return info

    def names(self) -> list[str]:
        """Models with at least one registered version."""
        return sorted({key.split("/")[1] for key in self.store.list(REGISTRY_PREFIX + "/") if "/versions/" in key})

    def version(self, name: str, version: int) -> ModelVersionInfo:
        """One version's record. Raises :class:`UnknownModel`."""
        try:
            info = ModelVersionInfo.model_validate_json(
                self.store.get_bytes(self._key(name, "versions", f"{version}.json"))
            )
        except ObjectNotFound:
            known = [v.version for v in self.versions(name)]
            raise UnknownModel(f"model {name!r} has no version {version}; registered versions: {known}") from None
        return info.model_copy(update={"live": self._state(name).version == version})

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """All versions of ``name``, oldest first, with ``live`` marked."""
        live = self._state(name).version
        infos = [
            ModelVersionInfo.model_validate_json(self.store.get_bytes(key))
            for key in self.store.list(self._key(name, "versions") + "/")
        ]
        return sorted((i.model_copy(update={"live": i.version == live}) for i in infos), key=lambda i: i.version)

    def _state(self, name: str) -> _LiveState:
        try:
            return _LiveState.model_validate_json(self.store.get_bytes(self._key(name, "live.json")))
        except ObjectNotFound:
            return _LiveState()

    def live(self, name: str) -> LiveModel:
        """Which version of ``name`` serves (``version`` None before the first deploy)."""
        state = self._state(name)
        return LiveModel(name=name, version=state.version, history=state.history)

    def serving_options(self, name: str) -> BatchingOptions:
        """The batching options of the last deploy (defaults before the first)."""
        return self._state(name).options

    def record_live(
        self, name: str, version: int, action: Literal["deploy", "rollback"], options: BatchingOptions
    ) -> LiveModel:
        """Point ``live`` at ``version`` and append the change to the history."""
        state = self._state(name)
        entry = ModelDeployment(version=version, action=action, at=datetime.now(UTC), previous=state.version)
        new = _LiveState(version=version, options=options, history=[*state.history, entry])
        self.store.put_bytes(self._key(name, "live.json"), new.model_dump_json(indent=2).encode(), "application/json")
        return LiveModel(name=name, version=version, history=new.history)


class DeploymentError(RuntimeError):
    """A version could not be made live; the previous live version keeps serving."""


class Deployer:
    """Makes versions live on an inference server, keeping the old one until the new one is ready.

    Args:
        registry: where versions and the live pointer are kept.
        client: the inference server's admin interface.
        sync: called after the repository changes, before Triton is asked to load (e.g. mirror the
            store into Triton's local folder); None when Triton reads the store itself.
        settle_s: how long the old version keeps serving after the pointer moved.
        ready_timeout_s: how long to wait for the new version to become ready.
        instance_kind: the instance group kind when the deploy's options name none
            (``DERMASYNTH_SERVING_INSTANCE_KIND``: ``gpu`` on a GPU overlay, ``cpu`` elsewhere).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        client: InferenceClient,
        *,
        sync: Callable[[], object] | None = None,
        settle_s: float = DEFAULT_SETTLE_S,
        ready_timeout_s: float = 180.0,
        instance_kind: Literal["cpu", "gpu"] = "cpu",
    ) -> None:
        self.registry = registry
        self.client = client
        self.sync = sync
        self.settle_s = settle_s
        self.ready_timeout_s = ready_timeout_s
        self.instance_kind: Literal["cpu", "gpu"] = instance_kind
        self._lock = asyncio.Lock()

    async def _serve(self, name: str, versions: list[int], options: BatchingOptions) -> None:
        self.registry.repository.write_config(name, versions, options, self.instance_kind)
        if self.sync is not None:
            await asyncio.to_thread(self.sync)
        await self.client.load_model(name)

    async def deploy(
        self,
        name: str,
        version: int,
        options: BatchingOptions | None = None,
        action: Literal["deploy", "rollback"] = "deploy",
    ) -> LiveModel:
        """Make ``version`` of ``name`` live.

        Raises:
            UnknownModel: for an unregistered version.
            DeploymentError: if Triton cannot load it (the live version is untouched).
        """
        self.registry.version(name, version)  # raises UnknownModel
        async with self._lock:
            current = self.registry.live(name).version
            options = options or self.registry.serving_options(name)
            both = sorted({version} | ({current} if current is not None else set()))
            started = time.perf_counter()
            try:
                await self._serve(name, both, options)
                await self._wait_ready(name, version)
            except (InferenceUnavailable, RuntimeError) as exc:
                if current is not None:
                    await self._serve(name, [current], self.registry.serving_options(name))
                raise DeploymentError(f"could not make {name} version {version} live: {exc}") from exc
            live = self.registry.record_live(name, version, action, options)
            log.info(
                "%s %s version %d live after %.1f s (was %s)",
                action,
                name,
                version,
                time.perf_counter() - started,
                current,
            )
            if current is not None and current != version:
                await asyncio.sleep(self.settle_s)
                await self._serve(name, [version], options)
            return live

    async def rollback(self, name: str, to_version: int | None = None) -> LiveModel:
        """Make the version that was live before the current one (or ``to_version``) live again.

        Raises:
            UnknownModel: if there is nothing to roll back to.
        """
        live = self.registry.live(name)
        target = to_version
        if target is None:
            target = live.history[-1].previous if live.history else None
        if target is None:
            raise UnknownModel(f"model {name!r} has no earlier live version to roll back to")
        return await self.deploy(name, target, action="rollback")

    async def _wait_ready(self, name: str, version: int) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not await self.client.model_ready(name, version):
            if time.monotonic() > deadline:
                raise DeploymentError(f"{name} version {version} was not ready after {self.ready_timeout_s:.0f} s")
            await asyncio.sleep(0.2)
