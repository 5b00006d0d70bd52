"""The Kubernetes sources agree with the code: settings, queues, the model repository, the MinIO init script,
the secrets every container names (rendered through the cpu and gpu overlays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dermasynth.config import Settings
from dermasynth.jobs.queues import QUEUES
from tests.k8s import invariants as inv
from tests.k8s.render import K8S, REPO

Doc = dict[str, Any]
SETTINGS_FIELDS = {f"DERMASYNTH_{name.upper()}" for name in Settings.model_fields}
# Settings other issues add under names agreed in the cross-issue contracts; the manifests set them already.
PENDING_SETTINGS = {
    "DERMASYNTH_WORKER_SHUTDOWN_GRACE_S",  # issue 11: worker graceful shutdown
    "DERMASYNTH_SERVING_INSTANCE_KIND",  # issue 14: ONNX serving, Triton instance groups
} - SETTINGS_FIELDS


def _yaml_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def test_every_file_parses_and_every_resource_is_named() -> None:
    for path in _yaml_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") not in {"Kustomization", "Component"} and "nameReference" not in doc:
                assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path


def test_kustomizations_reference_files_that_exist_and_the_base_lists_every_file() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
            assert (path.parent / entry).exists(), f"{path}: {entry} is missing"
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    unused = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml", "kustomizeconfig.yaml"}
    assert unused == set(base["resources"]), "base files not listed in the kustomization (or listed, missing)"


def test_environment_names_real_settings(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        config = inv.config(docs)
        names = set(config)
        for workload in inv.of_kind(docs, *inv.WORKLOAD_KINDS):
            for container in inv.containers(workload):
                names |= {e["name"] for e in container.get("env", [])}
        unknown = {n for n in names if n.startswith("DERMASYNTH_")} - SETTINGS_FIELDS - PENDING_SETTINGS
        assert not unknown, f"not Settings fields: {unknown}"


@pytest.mark.parametrize("service", ["gateway", "worker-gpu", "worker-cpu"])
def test_services_start_with_the_environment_kubernetes_gives_them(
    rendered: dict[str, list[Doc]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production Settings (which refuse default and placeholder secrets) accept each service's environment:
    the ConfigMap, the Secret's keys (secrets.env as `make k8s-secrets` writes it) and $(VAR) expansion."""
    docs = rendered["production"]
    container = inv.containers(inv.the(docs, "Deployment", service), init=False)[0]
    environment = inv.container_environment(docs, container)
    for name, value in environment.items():
        if name.startswith("DERMASYNTH_") and name not in PENDING_SETTINGS:
            monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg,unused-ignore]
    assert settings.environment == "production" and settings.log_format == "json"
    assert settings.redis_url == f"redis://:{environment['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.s3_access_key == environment["DERMASYNTH_S3_ACCESS_KEY"] != environment.get("MINIO_ROOT_USER")
    if service == "gateway":
        assert settings.triton_admin_key is not None


def test_workers_cover_every_queue_with_one_process_per_pod(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        served: list[str] = []
        for worker in inv.of_kind(docs, "Deployment"):
            container = inv.containers(worker, init=False)[0]
            if inv.queues_of(container):
                served += sorted(inv.queues_of(container))
                assert "--pool=solo" in container["args"]
        assert sorted(served) == sorted(QUEUES)


def test_triton_serves_the_repository_in_the_store(rendered: dict[str, list[Doc]]) -> None:
    config = inv.config(rendered["gpu"])
    args = inv.containers(inv.the(rendered["gpu"], "Deployment", "triton"), init=False)[0]["args"]
    repository = f"--model-repository=s3://{config['DERMASYNTH_S3_ENDPOINT']}/{config['DERMASYNTH_S3_BUCKET']}/models"
    assert repository in args
    assert config["DERMASYNTH_TRITON_URL"] == "triton:8000"


def test_workloads_select_their_own_pods_and_services_find_them(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["production"]
    pods = [(w["spec"]["template"]["metadata"]["labels"], w) for w in inv.of_kind(docs, "Deployment", "StatefulSet")]
    for labels, workload in pods:
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in inv.of_kind(docs, "Service"):
        matches = [w for labels, w in pods if service["spec"]["selector"].items() <= labels.items()]
        assert len(matches) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in inv.containers(matches[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


def test_secrets_example_lists_exactly_the_keys_the_manifests_use(rendered: dict[str, list[Doc]]) -> None:
    example = {
        line.split("=", 1)[0]
        for line in (K8S / "secrets.env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    used = set()
    for docs in rendered.values():
        for workload in inv.of_kind(docs, *inv.WORKLOAD_KINDS):
            for container in inv.containers(workload):
                used |= {
                    e["valueFrom"]["secretKeyRef"]["key"]
                    for e in container.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})
                }
        for auth in inv.of_kind(docs, "TriggerAuthentication"):
            used |= {ref["key"] for ref in auth["spec"]["secretTargetRef"]}
    assert used == example


def test_the_minio_init_script_is_one_script() -> None:
    assert (K8S / "base" / "minio-init.sh").read_bytes() == (REPO / "deploy" / "minio" / "init.sh").read_bytes()


def test_compose_and_kubernetes_run_the_same_third_party_images(rendered: dict[str, list[Doc]]) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    images = {c["image"] for w in inv.of_kind(rendered["gpu"], *inv.WORKLOAD_KINDS) for c in inv.containers(w)}
    for service in ("redis", "minio", "minio-init", "triton"):
        assert compose[service]["image"] in images, service


@pytest.mark.parametrize(
    "overlay", ["cpu", "gpu", "production"], ids=["cpu-overlay", "gpu-overlay", "production-overlay"]
)
def test_secrets_env_is_never_committed(overlay: str) -> None:
    ignored = (REPO / ".gitignore").read_text()
    assert "k8s/overlays/*/secrets.env" in ignored
    assert not (K8S / "overlays" / overlay / "secrets.env.example").exists(), "one example: k8s/secrets.env.example"


def test_prometheus_scrapes_every_pod_that_exports_metrics(rendered: dict[str, list[Doc]]) -> None:
    """Annotated pods: gateway, workers, Triton on a declared container port the NetworkPolicies open to
    Prometheus; the in-cluster scrape job keeps exactly the annotated pods."""
    docs = rendered["production"]
    annotated = {}
    for workload in inv.of_kind(docs, "Deployment"):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            ports = {p["containerPort"] for c in inv.containers(workload) for p in c.get("ports", [])}
            assert int(annotations["prometheus.io/port"]) in ports
            annotated[workload["metadata"]["name"]] = int(annotations["prometheus.io/port"])
    assert annotated == {"gateway": 8080, "worker-gpu": 9808, "worker-cpu": 9808, "triton": 8002}
    paths, _ = inv.reachability(docs)
    assert {(name, port) for name, port in annotated.items()} == {
        (target, port) for source, target, port in paths if source == "monitoring"
    }
    job = yaml.safe_load((REPO / "deploy" / "prometheus" / "kubernetes-scrape.yml").read_text())["scrape_configs"][0]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [inv.NAMESPACE]
    assert job["relabel_configs"][0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]


@pytest.mark.parametrize("key", ["REDIS_PASSWORD", "API_KEY_PEPPER", "GATEWAY_S3_SECRET_KEY", "TRITON_ADMIN_KEY"])
def test_the_gateway_refuses_to_start_with_a_placeholder_secret(
    rendered: dict[str, list[Doc]], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """secrets.env left with an example value: the gateway's production Settings stop it, naming the value."""
    import base64
    import copy

    docs = copy.deepcopy(rendered["production"])
    secret = next(d for d in docs if d["kind"] == "Secret")
    secret["data"][key] = base64.b64encode(b"change-me-change-me").decode()
    container = inv.containers(inv.the(docs, "Deployment", "gateway"), init=False)[0]
    for name, value in inv.container_environment(docs, container).items():
        if name.startswith("DERMASYNTH_") and name not in PENDING_SETTINGS:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="looks like a placeholder"):
        Settings(_env_file=None)  # type: ignore[call-arg,unused-ignore]


def test_worker_probes_use_the_workers_health_check_and_metrics_port(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["gpu"]
    port = int(inv.config(docs)["DERMASYNTH_WORKER_METRICS_PORT"])
    assert port != 0, "the workers' readiness needs their metrics server"
    for name in ("worker-gpu", "worker-cpu"):
        container = inv.containers(inv.the(docs, "Deployment", name), init=False)[0]
        named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named_ports[container["readinessProbe"]["httpGet"]["port"]] == port
        for probe in ("startupProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["python", "-m"], (name, probe)
            module = REPO.joinpath(*command[2].split(".")).with_suffix(".py")
            assert module.is_file(), f"{name} {probe}: {command[2]} does not exist"
            assert container[probe]["timeoutSeconds"] >= 10  # a fresh interpreter importing the worker's code


def test_kubernetes_runs_the_images_compose_builds(rendered: dict[str, list[Doc]]) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    built = {service["image"] for service in compose.values() if "build" in service}
    ours = {
        c["image"]
        for w in inv.of_kind(rendered["gpu"], *inv.WORKLOAD_KINDS)
        for c in inv.containers(w)
        if c["image"].startswith("dermasynth/")
    }
    assert ours == built
