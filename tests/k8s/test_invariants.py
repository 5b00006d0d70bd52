"""Invariants over every rendered overlay, and each invariant failing on a broken copy of the manifests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from dermasynth.config import Settings
from tests.k8s import invariants as inv
from tests.k8s.render import GPU_OVERLAYS, OVERLAYS

Doc = dict[str, Any]
# Issue 11's worker graceful shutdown (DERMASYNTH_WORKER_SHUTDOWN_GRACE_S); 90 s until its setting lands.
_GRACE_FIELD = Settings.model_fields.get("worker_shutdown_grace_s")
SHUTDOWN_GRACE_S = int(_GRACE_FIELD.default) if _GRACE_FIELD is not None else 90


def run_check(name: str, docs: list[Doc], overlay: str) -> list[str]:
    check = inv.CHECKS[name]
    if name == "gpus":
        return check(docs, overlay in GPU_OVERLAYS)
    if name == "worker_shutdown":
        return check(docs, SHUTDOWN_GRACE_S)
    if name == "autoscaling":
        return check(docs, Settings().job_key_prefix)
    return check(docs)


# ids are not the bare overlay name: tests/conftest.py skips any test carrying the keyword "gpu" without CUDA
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[f"{o}-overlay" for o in OVERLAYS])
@pytest.mark.parametrize("check", sorted(inv.CHECKS))
def test_overlay_keeps_the_invariant(rendered: dict[str, list[Doc]], overlay: str, check: str) -> None:
    assert run_check(check, rendered[overlay], overlay) == []


# ---- broken copies --------------------------------------------------------------------------------------------


def _workload(docs: list[Doc], name: str) -> Doc:
    found = next(d for d in docs if d["kind"] in inv.WORKLOAD_KINDS and d["metadata"]["name"] == name)
    return found


def _container(docs: list[Doc], name: str) -> dict[str, Any]:
    return inv.containers(_workload(docs, name), init=False)[0]


def _env(docs: list[Doc], name: str, variable: str) -> dict[str, Any]:
    return inv.env_of(_container(docs, name))[variable]


def _drop(docs: list[Doc], kind: str, name: str) -> None:
    docs.remove(next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name))


def _policy(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)


def _scaler(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["name"] == name)


def _set_image(name: str, image: str) -> Callable[[list[Doc]], None]:
    def mutate(docs: list[Doc]) -> None:
        workload = _workload(docs, name)
        inv.containers(workload)[-1]["image"] = image

    return mutate


def _open_frontend_to_redis(docs: list[Doc]) -> None:
    """Both ends must be broken: Redis lets the frontend in and the frontend may go anywhere."""
    _policy(docs, "redis")["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "frontend"}}}
    )
    _policy(docs, "frontend")["spec"]["egress"].append({})


def _open_triton_to_workers(docs: list[Doc]) -> None:
    _policy(docs, "triton")["spec"]["ingress"][0]["from"].append({"podSelector": {}})
    _policy(docs, "worker-gpu")["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 8000}]})


MUTATIONS: list[tuple[str, str, str, Callable[[list[Doc]], None]]] = [
    # GPU requests
    (
        "gpu-worker-without-gpu",
        "gpu",
        "gpus",
        lambda d: _container(d, "worker-gpu")["resources"]["limits"].pop("nvidia.com/gpu"),
    ),
    (
        "gpu-triton-without-toleration",
        "production",
        "gpus",
        lambda d: inv.pod_spec(_workload(d, "triton")).pop("tolerations"),
    ),
    (
        "gpu-on-cpu-cluster",
        "cpu",
        "gpus",
        lambda d: _container(d, "triton")["resources"]["limits"].update({"nvidia.com/gpu": 1}),
    ),
    (
        "triton-cpu-instances-on-gpu",
        "gpu",
        "gpus",
        lambda d: inv.the(d, "ConfigMap", "dermasynth-config")["data"].update(DERMASYNTH_SERVING_INSTANCE_KIND="cpu"),
    ),
    # probes and limits
    (
        "worker-without-liveness",
        "cpu",
        "probes_and_resources",
        lambda d: _container(d, "worker-cpu").pop("livenessProbe"),
    ),
    (
        "worker-liveness-celery-ping",
        "gpu",
        "probes_and_resources",
        lambda d: _container(d, "worker-gpu")["livenessProbe"].update(
            exec={"command": ["celery", "-A", "services.worker.celery_app", "inspect", "ping"]}
        ),
    ),
    ("redis-without-readiness", "gpu", "probes_and_resources", lambda d: _container(d, "redis").pop("readinessProbe")),
    (
        "job-without-limits",
        "production",
        "probes_and_resources",
        lambda d: _container(d, "minio-init")["resources"].pop("limits"),
    ),
    (
        "gateway-without-cpu-request",
        "cpu",
        "probes_and_resources",
        lambda d: _container(d, "gateway")["resources"]["requests"].pop("cpu"),
    ),
    # security
    (
        "privilege-escalation",
        "production",
        "security",
        lambda d: _container(d, "gateway")["securityContext"].update(allowPrivilegeEscalation=True),
    ),
    (
        "root-pod",
        "cpu",
        "security",
        lambda d: inv.pod_spec(_workload(d, "redis"))["securityContext"].pop("runAsNonRoot"),
    ),
    (
        "writable-root",
        "gpu",
        "security",
        lambda d: _container(d, "triton")["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    (
        "service-account-token",
        "cpu",
        "security",
        lambda d: inv.pod_spec(_workload(d, "frontend")).pop("automountServiceAccountToken"),
    ),
    # images
    (
        "latest-tag",
        "production",
        "images",
        _set_image("gateway", "registry.dermasynth.internal/dermasynth/gateway:latest"),
    ),
    ("untagged-image", "cpu", "images", _set_image("frontend", "dermasynth/frontend")),
    ("docker-hub-minio", "gpu", "images", _set_image("minio", "minio/minio:RELEASE.2025-09-07T16-13-09Z")),
    ("minio-by-tag-only", "cpu", "images", _set_image("minio-init", "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z")),
    # secrets
    (
        "password-in-configmap",
        "production",
        "secrets",
        lambda d: inv.the(d, "ConfigMap", "dermasynth-config")["data"].update(
            DERMASYNTH_REDIS_URL="redis://:hunter2hunter2@redis:6379/0"
        ),
    ),
    (
        "whole-secret-to-frontend",
        "cpu",
        "secrets",
        lambda d: (
            _container(d, "frontend")
            .setdefault("envFrom", [])
            .append({"secretRef": {"name": next(x for x in d if x["kind"] == "Secret")["metadata"]["name"]}})
        ),
    ),
    (
        "triton-gets-gateway-key",
        "gpu",
        "secrets",
        lambda d: _env(d, "triton", "AWS_SECRET_ACCESS_KEY")["valueFrom"]["secretKeyRef"].update(
            key="GATEWAY_S3_SECRET_KEY"
        ),
    ),
    (
        "missing-secret-key",
        "cpu",
        "secrets",
        lambda d: _env(d, "gateway", "DERMASYNTH_API_KEY_PEPPER")["valueFrom"]["secretKeyRef"].update(key="PEPPER"),
    ),
    # Triton
    (
        "triton-unrestricted",
        "production",
        "triton",
        lambda d: _container(d, "triton")["args"].remove(
            next(a for a in _container(d, "triton")["args"] if a.startswith("--http-restricted-api"))
        ),
    ),
    ("triton-grpc-on", "cpu", "triton", lambda d: _container(d, "triton")["args"].remove("--allow-grpc=false")),
    ("triton-without-startup-probe", "gpu", "triton", lambda d: _container(d, "triton").pop("startupProbe")),
    ("triton-published", "cpu", "triton", lambda d: inv.the(d, "Service", "triton")["spec"].update(type="NodePort")),
    (
        "triton-reads-as-gateway",
        "production",
        "triton",
        lambda d: _env(d, "triton", "AWS_ACCESS_KEY_ID")["valueFrom"]["secretKeyRef"].update(
            key="GATEWAY_S3_ACCESS_KEY"
        ),
    ),
    # worker grace periods
    (
        "worker-default-grace",
        "gpu",
        "worker_shutdown",
        lambda d: inv.pod_spec(_workload(d, "worker-gpu")).update(terminationGracePeriodSeconds=30),
    ),
    (
        "worker-long-prestop",
        "cpu",
        "worker_shutdown",
        lambda d: _container(d, "worker-cpu")["lifecycle"]["preStop"].update(sleep={"seconds": 60}),
    ),
    (
        "grace-setting-raised",
        "production",
        "worker_shutdown",
        lambda d: inv.the(d, "ConfigMap", "dermasynth-config")["data"].update(DERMASYNTH_WORKER_SHUTDOWN_GRACE_S="300"),
    ),
    # KEDA
    (
        "keda-short-address",
        "production",
        "autoscaling",
        lambda d: _scaler(d, "worker-gpu")["spec"]["triggers"][0]["metadata"].update(address="redis:6379"),
    ),
    (
        "keda-wrong-namespace",
        "gpu",
        "autoscaling",
        lambda d: _scaler(d, "worker-cpu")["spec"]["triggers"][1]["metadata"].update(
            address="redis.default.svc.cluster.local:6379"
        ),
    ),
    (
        "keda-queued-only",
        "cpu",
        "autoscaling",
        lambda d: _scaler(d, "worker-gpu")["spec"].update(
            triggers=[t for t in _scaler(d, "worker-gpu")["spec"]["triggers"] if "running" not in t["name"]]
        ),
    ),
    (
        "keda-formula-drops-running",
        "gpu",
        "autoscaling",
        lambda d: _scaler(d, "worker-gpu")["spec"]["advanced"]["scalingModifiers"].update(
            formula="queued_gan + queued_train"
        ),
    ),
    ("keda-no-password", "production", "autoscaling", lambda d: _drop(d, "TriggerAuthentication", "redis")),
    # availability
    ("gateway-without-pdb", "production", "availability", lambda d: _drop(d, "PodDisruptionBudget", "gateway")),
    (
        "pdb-blocks-drains",
        "cpu",
        "availability",
        lambda d: next(x for x in d if x["kind"] == "PodDisruptionBudget" and x["metadata"]["name"] == "redis")[
            "spec"
        ].update(maxUnavailable=0),
    ),
    ("ingress-without-tls", "gpu", "availability", lambda d: inv.the(d, "Ingress", "dermasynth")["spec"].pop("tls")),
    ("gateway-without-hpa", "cpu", "availability", lambda d: _drop(d, "HorizontalPodAutoscaler", "gateway")),
    # network policies
    ("no-default-deny", "production", "network", lambda d: _drop(d, "NetworkPolicy", "default-deny")),
    ("frontend-reaches-redis", "cpu", "network", lambda d: _open_frontend_to_redis(d)),
    ("triton-open-to-workers", "gpu", "network", lambda d: _open_triton_to_workers(d)),
    ("no-dns", "cpu", "network", lambda d: _drop(d, "NetworkPolicy", "allow-dns")),
    ("gateway-cannot-reach-triton", "production", "network", lambda d: _policy(d, "gateway")["spec"]["egress"].pop(2)),
]


@pytest.mark.parametrize(("overlay", "check", "mutate"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_invariant_fails_on_a_broken_copy(
    rendered: dict[str, list[Doc]], overlay: str, check: str, mutate: Callable[[list[Doc]], None]
) -> None:
    broken = copy.deepcopy(rendered[overlay])
    mutate(broken)
    assert run_check(check, broken, overlay), f"{check} did not notice the broken copy"


def test_every_invariant_has_a_broken_copy() -> None:
    assert {m[2] for m in MUTATIONS} == set(inv.CHECKS)
