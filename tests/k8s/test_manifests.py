"""The Kubernetes manifests: kustomize structure, selectors, ports, GPU requests and queue autoscaling
(no cluster or kustomize binary here: the YAML is parsed and cross-checked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dermasynth.config import Settings
from dermasynth.jobs.queues import broker_key_prefix

K8S = Path(__file__).resolve().parents[2] / "k8s"
SETTINGS_FIELDS = {f"DERMASYNTH_{name.upper()}" for name in Settings.model_fields}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _documents(K8S / "base" / name)]


def _of_kind(*kinds: str) -> Iterator[dict[str, Any]]:
    return (doc for doc in _base() if doc["kind"] in kinds)


def _by_name(kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name)


def test_every_file_parses_and_every_resource_is_named() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 13
    for path in files:
        for doc in _documents(path):
            if doc.get("kind") != "Kustomization":
                assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path


def test_kustomizations_reference_files_that_exist() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        assert kustomization["kind"] == "Kustomization"
        for resource in kustomization.get("resources", []):
            assert (path.parent / resource).exists(), f"{path}: {resource} is missing"
    unused = (
        {p.name for p in (K8S / "base").glob("*.yaml")}
        - {"kustomization.yaml"}
        - set(yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"])
    )
    assert not unused, f"base files not listed in the kustomization: {unused}"


def test_workloads_select_their_own_pods_and_services_find_them() -> None:
    pod_labels = []
    for workload in _of_kind("Deployment", "StatefulSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
        pod_labels.append((labels, workload))
    for service in _of_kind("Service"):
        matches = [w for labels, w in pod_labels if service["spec"]["selector"].items() <= labels.items()]
        assert len(matches) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in matches[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


def test_environment_names_real_settings() -> None:
    config = _by_name("ConfigMap", "dermasynth-config")["data"]
    secret = _by_name("Secret", "dermasynth-secrets")["stringData"]
    for name in [*config, *secret]:
        if name.startswith("DERMASYNTH_"):
            assert name in SETTINGS_FIELDS, name
    Settings.model_validate(
        {
            k.removeprefix("DERMASYNTH_").lower(): v
            for k, v in {**config, **secret}.items()
            if k.startswith("DERMASYNTH_")
        }
    )


@pytest.mark.parametrize(
    ("name", "queues", "gpu"), [("worker-gpu", {"gan", "train"}, True), ("worker-cpu", {"default"}, False)]
)
def test_workers(name: str, queues: set[str], gpu: bool) -> None:
    container = _by_name("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert set(args[args.index("-Q") + 1].split(",")) == queues and "--pool=solo" in args
    assert (container["resources"]["limits"].get("nvidia.com/gpu") == 1) is gpu


def test_triton_serves_the_repository_in_minio_on_a_gpu() -> None:
    container = _by_name("Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
    bucket = _by_name("ConfigMap", "dermasynth-config")["data"]["DERMASYNTH_S3_BUCKET"]
    assert f"--model-repository=s3://minio:9000/{bucket}/models" in container["args"]
    assert "--model-control-mode=explicit" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {e["name"] for e in container["env"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def test_workers_scale_on_their_queue_lengths() -> None:
    prefix = broker_key_prefix(Settings())
    deployments = {d["metadata"]["name"] for d in _of_kind("Deployment")}
    watched: dict[str, set[str]] = {}
    for scaled in _of_kind("ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        watched[target] = {
            t["metadata"]["listName"].removeprefix(prefix) for t in scaled["spec"]["triggers"] if t["type"] == "redis"
        }
        assert all(t["metadata"]["listName"].startswith(prefix) for t in scaled["spec"]["triggers"])
    assert watched == {"worker-gpu": {"gan", "train"}, "worker-cpu": {"default"}}


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = _by_name("StatefulSet", "redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and redis["spec"]["volumeClaimTemplates"]


def test_overlays_patch_what_exists() -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in _base()}
    images = {c["image"] for d in _of_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    for path in (K8S / "overlays").rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        assert kustomization["resources"] == ["../../base"]
        for patch in kustomization.get("patches", []):
            assert (patch["target"]["kind"], patch["target"]["name"]) in names, (path, patch["target"])
            for op in yaml.safe_load(patch["patch"]):
                assert op["op"] in {"add", "remove", "replace"} and op["path"].startswith("/spec")
        for image in kustomization.get("images", []):
            assert image["name"] in images, (path, image["name"])
    assert (K8S / "overlays" / "production" / "secrets.env.example").is_file()
