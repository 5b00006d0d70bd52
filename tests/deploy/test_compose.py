"""docker-compose.yml, the Dockerfiles and Prometheus' config: valid against the compose specification, the
deployment rules (each shown to fail on a broken copy), and in agreement with the code. No Docker engine
here: the files are parsed and checked, not run."""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dermasynth.config import Settings
from dermasynth.jobs.queues import QUEUES
from tests.deploy import compose_checks as checks

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SETTINGS_FIELDS = {f"DERMASYNTH_{name.upper()}" for name in Settings.model_fields}
PENDING_SETTINGS = {"DERMASYNTH_WORKER_SHUTDOWN_GRACE_S", "DERMASYNTH_SERVING_INSTANCE_KIND"} - SETTINGS_FIELDS


def example_env() -> dict[str, str]:
    """.env as an operator fills it from .env.example: random hex for every empty value."""
    env = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value or secrets.token_hex(24)
    return env


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if operator == "?":
            raise KeyError(f"{name}: {argument}")
        return argument if operator == "-" else ""

    return checks.REFERENCE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def _queues(service: dict[str, Any]) -> set[str]:
    command = service["command"]
    return set(command[command.index("-Q") + 1].split(","))


@pytest.mark.parametrize("check", sorted(checks.CHECKS))
def test_compose_keeps_the_rule(check: str) -> None:
    assert checks.CHECKS[check](COMPOSE) == []


MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    ("misspelt-key", "schema", lambda c: c["services"]["gateway"].update(depend_on=["redis"])),
    ("wrong-type", "schema", lambda c: c["services"]["redis"].update(volumes="redis-data:/data")),
    ("redis-published", "published_ports", lambda c: c["services"]["redis"].update(ports=["6379:6379"])),
    ("gateway-on-all-interfaces", "published_ports", lambda c: c["services"]["gateway"].update(ports=["8080:8080"])),
    (
        "default-secret",
        "secrets",
        lambda c: c["services"]["minio"]["environment"].update(
            MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-minioadmin}"
        ),
    ),
    (
        "literal-pepper",
        "secrets",
        lambda c: c["services"]["gateway"]["environment"].update(
            DERMASYNTH_API_KEY_PEPPER="dermasynth-development-pepper"
        ),
    ),
    (
        "redis-without-password",
        "redis",
        lambda c: c["services"]["redis"].update(command=["exec redis-server --appendonly yes"]),
    ),
    (
        "frontend-before-gateway-healthy",
        "health_and_order",
        lambda c: c["services"]["frontend"].update(depends_on=["gateway"]),
    ),
    ("worker-without-healthcheck", "health_and_order", lambda c: c["services"]["worker-cpu"].pop("healthcheck")),
    ("triton-without-gpu", "gpus_and_workers", lambda c: c["services"]["triton"].pop("deploy")),
    ("worker-killed-early", "gpus_and_workers", lambda c: c["services"]["worker-gpu"].update(stop_grace_period="10s")),
    ("triton-published", "triton", lambda c: c["services"]["triton"].update(ports=["127.0.0.1:8000:8000"])),
    (
        "triton-unrestricted",
        "triton",
        lambda c: c["services"]["triton"].update(
            command=[a for a in c["services"]["triton"]["command"] if not a.startswith("--http-restricted-api")]
        ),
    ),
    ("frontend-on-backend", "isolation", lambda c: c["services"]["frontend"].update(networks=["web", "backend"])),
    ("backend-routable", "isolation", lambda c: c["networks"]["backend"].pop("internal")),
    ("latest-image", "images", lambda c: c["services"]["prometheus"].update(image="prom/prometheus:latest")),
    (
        "docker-hub-minio",
        "images",
        lambda c: c["services"]["minio"].update(image="minio/minio:RELEASE.2025-04-22T22-12-26Z"),
    ),
]


@pytest.mark.parametrize(("check", "mutate"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_rule_fails_on_a_broken_copy(check: str, mutate: Callable[[dict[str, Any]], None]) -> None:
    broken = copy.deepcopy(COMPOSE)
    mutate(broken)
    assert checks.CHECKS[check](broken), f"{check} did not notice"


def test_every_rule_has_a_broken_copy() -> None:
    assert {m[1] for m in MUTATIONS} == set(checks.CHECKS)


def test_env_example_documents_exactly_the_variables_compose_requires() -> None:
    required = {name for name, operator, _ in checks.references(COMPOSE) if operator == "?"}
    optional = {name for name, operator, _ in checks.references(COMPOSE) if operator != "?"}
    documented = set(example_env())
    assert required <= documented, f"undocumented: {required - documented}"
    assert documented <= required | optional, f"documented but unused: {documented - required - optional}"
    assert not [line for line in (REPO / ".env.example").read_text().splitlines() if "minioadmin" in line]


def test_compose_refuses_to_start_without_a_secret() -> None:
    env = example_env()
    del env["REDIS_PASSWORD"]
    with pytest.raises(KeyError, match=r"REDIS_PASSWORD: set REDIS_PASSWORD in \.env"):
        interpolate(SERVICES["gateway"]["environment"]["DERMASYNTH_REDIS_URL"], env)


@pytest.mark.parametrize("service", ["gateway", "worker-gpu", "worker-cpu"])
def test_services_start_with_the_environment_compose_gives_them(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = example_env()
    environment = {k: interpolate(str(v), env) for k, v in SERVICES[service]["environment"].items()}
    for name, value in environment.items():
        assert not name.startswith("DERMASYNTH_") or name in SETTINGS_FIELDS | PENDING_SETTINGS, name
        if name.startswith("DERMASYNTH_") and name not in PENDING_SETTINGS:
            monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg,unused-ignore]
    assert settings.environment == "production"
    assert settings.redis_url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    owner = "GATEWAY" if service == "gateway" else "WORKER"
    assert settings.s3_access_key == env[f"{owner}_S3_ACCESS_KEY"]


def test_workers_cover_every_queue_with_one_process_each() -> None:
    assert _queues(SERVICES["worker-gpu"]) | _queues(SERVICES["worker-cpu"]) == set(QUEUES)
    for name in ("worker-gpu", "worker-cpu"):
        assert "--pool=solo" in SERVICES[name]["command"]


def test_triton_reads_its_repository_from_minio() -> None:
    bucket = SERVICES["gateway"]["environment"]["DERMASYNTH_S3_BUCKET"]
    assert f"--model-repository=s3://minio:9000/{bucket}/models" in SERVICES["triton"]["command"]
    assert "--model-control-mode=explicit" in SERVICES["triton"]["command"]


def test_the_frontend_reaches_only_the_gateway() -> None:
    assert SERVICES["frontend"]["environment"]["DERMASYNTH_GATEWAY_URL"] == "http://gateway:8080"
    assert not [k for k in SERVICES["frontend"]["environment"] if checks.SECRET_VARIABLES.search(k)]


def test_prometheus_scrapes_the_gateway_workers_and_triton() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {"gateway:8080", "worker-gpu:9808", "worker-cpu:9808", "triton:8002"}
    for target in targets:
        host = target.split(":")[0]
        assert set(SERVICES[host]["networks"]) & set(SERVICES["prometheus"]["networks"]), target
    assert SERVICES["worker-gpu"]["environment"]["DERMASYNTH_WORKER_METRICS_PORT"] == "9808"
    mounted = SERVICES["prometheus"]["volumes"][0].split(":")[0]
    assert (REPO / mounted).resolve() == REPO / "deploy" / "prometheus" / "prometheus.yml"


def test_minio_init_script_is_mounted_and_creates_the_bucket_and_users() -> None:
    source = SERVICES["minio-init"]["volumes"][0].split(":")[0]
    script = (REPO / source).read_text()
    assert "mc mb --ignore-existing" in script and "models/.keep" in script
    for user in ("GATEWAY", "WORKER", "TRITON"):
        assert f'mc admin user add store "${user}_S3_ACCESS_KEY"' in script
        assert f"{user}_S3_ACCESS_KEY" in SERVICES["minio-init"]["environment"]
