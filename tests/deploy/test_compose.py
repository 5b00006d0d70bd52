"""docker-compose.yml, the Dockerfiles and Prometheus' config agree with each other and with the code
(no Docker engine here: the files are parsed and cross-checked, not run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dermasynth.config import Settings
from dermasynth.jobs.queues import QUEUES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SETTINGS_FIELDS = {f"DERMASYNTH_{name.upper()}" for name in Settings.model_fields}


def _queues(service: dict[str, Any]) -> set[str]:
    command = service["command"]
    return set(command[command.index("-Q") + 1].split(","))


def test_the_stack_has_every_part() -> None:
    assert set(SERVICES) == {
        "redis",
        "minio",
        "minio-init",
        "gateway",
        "worker-gpu",
        "worker-cpu",
        "triton",
        "frontend",
        "prometheus",
    }


def test_dependencies_name_real_services() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"


def test_published_ports_are_unique() -> None:
    published = [port.split(":")[0] for service in SERVICES.values() for port in service.get("ports", [])]
    assert len(published) == len(set(published)), published


def test_environment_variables_are_real_settings() -> None:
    for name, service in SERVICES.items():
        for variable in service.get("environment", {}):
            if variable.startswith("DERMASYNTH_"):
                assert variable in SETTINGS_FIELDS, f"{name}: {variable} is not a Settings field"


def test_redis_keeps_an_append_only_file() -> None:
    assert "--appendonly" in SERVICES["redis"]["command"]
    assert SERVICES["redis"]["command"][SERVICES["redis"]["command"].index("--appendonly") + 1] == "yes"


def test_workers_cover_every_queue_and_gpu_work_gets_a_gpu() -> None:
    assert _queues(SERVICES["worker-gpu"]) | _queues(SERVICES["worker-cpu"]) == set(QUEUES)
    assert {"gan", "train"} <= _queues(SERVICES["worker-gpu"])
    for name in ("worker-gpu", "worker-cpu"):
        assert "--pool=solo" in SERVICES[name]["command"]
    gpu = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["count"] == 1 and "gpu" in gpu["capabilities"]


def test_services_share_one_store_and_redis() -> None:
    env = SERVICES["gateway"]["environment"]
    assert env == SERVICES["worker-gpu"]["environment"] == SERVICES["worker-cpu"]["environment"]
    assert env["DERMASYNTH_STORE"] == "s3" and env["DERMASYNTH_S3_ENDPOINT"] == "minio:9000"
    assert env["DERMASYNTH_REDIS_URL"].startswith("redis://redis:6379")
    assert env["DERMASYNTH_TRITON_URL"] == "triton:8000"


def test_triton_reads_its_repository_from_minio() -> None:
    triton = SERVICES["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    bucket = SERVICES["gateway"]["environment"]["DERMASYNTH_S3_BUCKET"]
    assert f"--model-repository=s3://minio:9000/{bucket}/models" in triton["command"]
    assert "--model-control-mode=explicit" in triton["command"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(triton["environment"])
    assert triton["environment"]["AWS_SECRET_ACCESS_KEY"] == SERVICES["minio"]["environment"]["MINIO_ROOT_PASSWORD"]


def test_the_frontend_reaches_only_the_gateway() -> None:
    env = SERVICES["frontend"]["environment"]
    assert env == {"DERMASYNTH_GATEWAY_URL": "http://gateway:8080"}


def test_prometheus_scrapes_the_gateway_workers_and_triton() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target for job in config["scrape_configs"] for group in job["static_configs"] for target in group["targets"]
    }
    assert targets == {"gateway:8080", "worker-gpu:9808", "worker-cpu:9808", "triton:8002"}
    for target in targets:
        host = target.split(":")[0]
        assert host in SERVICES, target
    assert SERVICES["worker-gpu"]["environment"]["DERMASYNTH_WORKER_METRICS_PORT"] == "9808"
    mounted = SERVICES["prometheus"]["volumes"][0].split(":")[0]
    assert (REPO / mounted).resolve() == REPO / "deploy" / "prometheus" / "prometheus.yml"


def test_minio_init_script_is_mounted_and_creates_the_bucket() -> None:
    source = SERVICES["minio-init"]["volumes"][0].split(":")[0]
    script = (REPO / source).read_text()
    assert "mc mb --ignore-existing" in script and "models/.keep" in script


@pytest.mark.parametrize("service", ["gateway", "worker-gpu", "worker-cpu", "frontend"])
def test_built_images_have_their_dockerfile_and_sources(service: str) -> None:
    build = SERVICES[service]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert text.splitlines()[0].startswith("#") and re.search(r"^FROM \S+", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / build["context"] / path).exists(), f"{dockerfile.name}: COPY {path} does not exist"
    assert "USER dermasynth" in text
    if service == "frontend":
        app = re.search(r'"run", "/app/frontend/(\S+)"', text)
        assert app is not None and (REPO / "services" / "frontend" / app.group(1)).is_file()


def test_dockerfile_commands_match_the_code() -> None:
    gateway = (REPO / "deploy" / "docker" / "gateway.Dockerfile").read_text()
    assert "services.gateway.app:create_app" in gateway and "--factory" in gateway
    for name in ("worker.Dockerfile", "worker-cuda.Dockerfile"):
        assert "services.worker.celery_app" in (REPO / "deploy" / "docker" / name).read_text()
