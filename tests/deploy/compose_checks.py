"""Checks of docker-compose.yml (parsed, not run: no Docker engine here). Each returns the problems it finds, so
tests show it passing on the real file and failing on a broken copy."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema

Compose = dict[str, Any]
PUBLISHED = {"gateway", "frontend"}
SECRET_VARIABLES = re.compile(r"PASSWORD|SECRET|PEPPER|ADMIN_KEY|ACCESS_KEY")
REFERENCE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
WORKER_SHUTDOWN_GRACE_S = 90


@cache
def compose_schema() -> dict[str, Any]:
    """The compose specification's JSON schema, as vendored in the check-jsonschema wheel."""
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def check_schema(compose: Compose) -> list[str]:
    validator = jsonschema.validators.validator_for(compose_schema())(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]


def references(value: Any) -> list[tuple[str, str | None, str]]:
    """(variable, operator, argument) of every ${...} in a value (recursively)."""
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    if isinstance(value, str):
        return [(m.group(1), m.group(2), m.group(3) or "") for m in REFERENCE.finditer(value.replace("$$", ""))]
    return []


def check_published_ports(compose: Compose) -> list[str]:
    """Only the gateway and the frontend publish ports, on an address that defaults to 127.0.0.1."""
    problems = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name not in PUBLISHED:
                problems.append(f"{name} publishes {port}")
            elif not re.fullmatch(r"\$\{\w+:-127\.0\.0\.1\}:\d+:\d+", str(port)):
                problems.append(f"{name} publishes {port} on all interfaces by default")
    return problems


def check_secrets(compose: Compose) -> list[str]:
    """Every secret comes from ${VAR:?}: no default, no literal, and never minioadmin."""
    problems = []
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        for variable, value in environment.items():
            text = str(value)
            if "minioadmin" in text:
                problems.append(f"{name}: {variable} uses minioadmin")
            looks_secret = SECRET_VARIABLES.search(variable) or variable in {"DERMASYNTH_REDIS_URL", "REDISCLI_AUTH"}
            if not looks_secret:
                continue
            refs = references(text)
            if not refs or any(op != "?" for _, op, _ in refs):
                problems.append(f"{name}: {variable} is not a required ${{VAR:?}} reference: {text}")
        for argument in service.get("command", []) if isinstance(service.get("command"), list) else []:
            for variable, op, _ in references(argument):
                if SECRET_VARIABLES.search(variable) and op != "?":
                    problems.append(f"{name}: command uses {variable} without ${{VAR:?}}")
    return problems


def check_redis(compose: Compose) -> list[str]:
    redis = compose["services"]["redis"]
    script = " ".join(redis.get("command", [])) if isinstance(redis.get("command"), list) else str(redis.get("command"))
    problems = []
    if "--appendonly yes" not in script:
        problems.append("Redis keeps no append-only file")
    if "requirepass $$REDIS_PASSWORD" not in script:
        problems.append("Redis has no password (requirepass from the environment)")
    if "REDISCLI_AUTH" not in redis.get("environment", {}):
        problems.append("Redis' health check cannot authenticate")
    if not any(v.endswith(":/data") for v in redis.get("volumes", [])):
        problems.append("Redis' data is not on a volume")
    return problems


def check_health_and_order(compose: Compose) -> list[str]:
    """Long-running services have health checks; dependencies wait on health or completion."""
    problems = []
    for name, service in compose["services"].items():
        if name not in {"minio-init", "prometheus"} and "healthcheck" not in service:
            problems.append(f"{name} has no healthcheck")
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dependency, rule in depends.items():
            if dependency not in compose["services"]:
                problems.append(f"{name} depends on unknown {dependency}")
            wanted = "service_completed_successfully" if dependency == "minio-init" else "service_healthy"
            if name != "prometheus" and rule.get("condition") != wanted:
                problems.append(f"{name} starts before {dependency} is {wanted.removeprefix('service_')}")
    return problems


def _gpus(service: dict[str, Any]) -> int:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return sum(int(d.get("count", 0)) for d in devices if "gpu" in d.get("capabilities", []))


def check_gpus_and_workers(compose: Compose) -> list[str]:
    services = compose["services"]
    problems = [f"{name} reserves no GPU" for name in ("worker-gpu", "triton") if _gpus(services[name]) != 1]
    for name in ("worker-gpu", "worker-cpu"):
        grace = services[name].get("stop_grace_period", "10s")
        seconds = int(re.fullmatch(r"(\d+)s", grace).group(1)) if re.fullmatch(r"(\d+)s", grace) else 0  # type: ignore[union-attr]
        if seconds < WORKER_SHUTDOWN_GRACE_S + 30:
            problems.append(f"{name}: stop_grace_period {grace} < worker shutdown grace + 30 s")
    return problems


def check_triton(compose: Compose) -> list[str]:
    triton = compose["services"]["triton"]
    command = triton.get("command", [])
    problems = []
    if triton.get("ports"):
        problems.append("Triton publishes ports")
    if "--allow-grpc=false" not in command:
        problems.append("Triton serves gRPC")
    restricted = next((c for c in command if c.startswith("--http-restricted-api=")), "")
    if "model-repository" not in restricted or "triton-admin-key=${TRITON_ADMIN_KEY:?" not in restricted:
        problems.append("Triton's model control is not restricted to the gateway's key")
    if "TRITON_S3_SECRET_KEY" not in str(triton.get("environment", {}).get("AWS_SECRET_ACCESS_KEY")):
        problems.append("Triton does not read the store with its own read-only user")
    return problems


def check_isolation(compose: Compose) -> list[str]:
    """The frontend shares a network only with the gateway; the backend network has no way out."""
    services = compose["services"]
    problems = []
    frontend_networks = set(services["frontend"].get("networks", ["default"]))
    for name, service in services.items():
        if name not in {"frontend", "gateway"} and frontend_networks & set(service.get("networks", ["default"])):
            problems.append(f"the frontend shares a network with {name}")
    if not compose.get("networks", {}).get("backend", {}).get("internal"):
        problems.append("the backend network is not internal")
    for name in ("redis", "minio", "triton"):
        if "web" in services[name].get("networks", []):
            problems.append(f"{name} is on the web network")
    return problems


def check_images(compose: Compose) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            problems.append(f"{name} has no image name (tag the build)")
            continue
        name_part, _, digest = image.partition("@")
        tag = name_part.rsplit("/", 1)[-1].partition(":")[2]
        if not digest and tag in {"", "latest"}:
            problems.append(f"{name}: image {image} is not pinned")
        if "minio" in name_part and not (name_part.startswith("quay.io/minio/") and digest.startswith("sha256:")):
            problems.append(f"{name}: MinIO image {image} is not quay.io's, by digest")
    return problems


CHECKS: dict[str, Callable[[Compose], list[str]]] = {
    "schema": check_schema,
    "published_ports": check_published_ports,
    "secrets": check_secrets,
    "redis": check_redis,
    "health_and_order": check_health_and_order,
    "gpus_and_workers": check_gpus_and_workers,
    "triton": check_triton,
    "isolation": check_isolation,
    "images": check_images,
}
