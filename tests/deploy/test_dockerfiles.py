"""The service images: multi-stage, pinned base images, a numeric non-root user, and each installing only its
service's extra (the frontend without torch). Checked on the Dockerfiles' text (no Docker engine here), and
each check shown to fail on a broken copy."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
# Dockerfile -> the pyproject extra it installs (the extras are issue 17's packaging contract)
EXTRAS = {"gateway": "gateway", "worker": "train", "worker-cuda": "train", "frontend": "frontend"}
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def check_multi_stage(text: str) -> list[str]:
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.M)
    problems = [] if len(stages) >= 2 else ["a single stage: build tools ship in the image"]
    if not re.search(r"^COPY --from=build ", text, re.M):
        problems.append("the final stage copies nothing from the build stage")
    return problems


def check_pinned_bases(text: str) -> list[str]:
    problems = []
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        if image in {"base", "build"}:
            continue
        tag = image.partition("@")[0].rsplit("/", 1)[-1].partition(":")[2]
        if "@sha256:" not in image and (not tag or tag == "latest" or not re.search(r"\d+\.\d+", tag)):
            problems.append(f"base image {image} is not pinned to a version")
    return problems


def check_non_root(text: str) -> list[str]:
    users = re.findall(r"^USER (\S+)", text, re.M)
    if not users:
        return ["no USER: the image runs as root"]
    user = users[-1].split(":")[0]
    if not user.isdigit() or int(user) == 0:
        return [f"USER {users[-1]}: not a numeric non-root user (Kubernetes' runAsNonRoot cannot verify a name)"]
    return []


def check_extra(text: str, extra: str) -> list[str]:
    installs = re.findall(r'pip install "/src\[([\w,]+)\]"', text)
    problems = [] if installs == [extra] else [f"installs {installs or 'the whole package'}, not only [{extra}]"]
    if extra == "frontend" and re.search(
        r"\btorch\b", "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    ):
        problems.append("the frontend image installs torch")
    return problems


CHECKS: dict[str, Callable[[str, str], list[str]]] = {
    "multi_stage": lambda text, extra: check_multi_stage(text),
    "pinned_bases": lambda text, extra: check_pinned_bases(text),
    "non_root": lambda text, extra: check_non_root(text),
    "extra": check_extra,
}


@pytest.mark.parametrize("name", sorted(EXTRAS))
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_dockerfile_keeps_the_rule(name: str, check: str) -> None:
    assert CHECKS[check]((DOCKER / f"{name}.Dockerfile").read_text(), EXTRAS[name]) == []


MUTATIONS: list[tuple[str, str, str, Callable[[str], str]]] = [
    ("single-stage", "gateway", "multi_stage", lambda t: re.sub(r"^COPY --from=build .*$", "", t, flags=re.M)),
    ("latest-base", "worker", "pinned_bases", lambda t: t.replace("python:3.11.13-slim-bookworm", "python:latest")),
    ("untagged-base", "frontend", "pinned_bases", lambda t: t.replace("python:3.11.13-slim-bookworm", "python")),
    ("root-user", "worker-cuda", "non_root", lambda t: t.replace("USER 10001:10001", "USER root")),
    ("no-user", "gateway", "non_root", lambda t: t.replace("USER 10001:10001", "")),
    ("whole-package", "gateway", "extra", lambda t: t.replace('"/src[gateway]"', "/src")),
    (
        "frontend-with-torch",
        "frontend",
        "extra",
        lambda t: t.replace(
            'RUN pip install "/src[frontend]"', 'RUN pip install torch==2.14.1\nRUN pip install "/src[frontend]"'
        ),
    ),
]


@pytest.mark.parametrize(("name", "check", "mutate"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_rule_fails_on_a_broken_copy(name: str, check: str, mutate: Callable[[str], str]) -> None:
    broken = mutate((DOCKER / f"{name}.Dockerfile").read_text())
    assert CHECKS[check](broken, EXTRAS[name])


@pytest.mark.parametrize("service", ["gateway", "worker-gpu", "worker-cpu", "frontend"])
def test_compose_builds_each_image_from_its_dockerfile_with_sources_that_exist(service: str) -> None:
    build = COMPOSE[service]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / build["context"] / path).exists(), f"{dockerfile.name}: COPY {path} does not exist"
    assert COMPOSE[service]["image"].split(":")[0] == "dermasynth/" + dockerfile.name.removesuffix(".Dockerfile")


def test_dockerfile_commands_match_the_code() -> None:
    gateway = (DOCKER / "gateway.Dockerfile").read_text()
    assert "services.gateway.app:create_app" in gateway and "--factory" in gateway
    for name in ("worker.Dockerfile", "worker-cuda.Dockerfile"):
        assert "services.worker.celery_app" in (DOCKER / name).read_text()
    app = re.search(r'"run", "/app/frontend/(\S+)"', (DOCKER / "frontend.Dockerfile").read_text())
    assert app is not None and (REPO / "services" / "frontend" / app.group(1)).is_file()


def _closure(extra: str, declared: dict[str, list[str]], base: list[str]) -> set[str]:
    """Names of the distributions `pip install '.[extra]'` asks for (following dermasynth[...] references)."""
    names: set[str] = set()
    for requirement in [*base, *declared[extra]]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()  # type: ignore[union-attr]
        inner = re.match(r"dermasynth\[([\w,]+)\]", requirement)
        if inner:
            for part in inner.group(1).split(","):
                names |= _closure(part, declared, base)
        else:
            names.add(name)
    return names


def test_each_image_installs_what_its_service_needs_and_the_frontend_no_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared, base = project["optional-dependencies"], project["dependencies"]
    assert set(EXTRAS.values()) <= set(declared)
    frontend = _closure("frontend", declared, base)
    assert "streamlit" in frontend and "httpx" in frontend
    assert not frontend & {"torch", "torchvision", "celery", "redis", "minio", "fastapi", "tritonclient"}
    assert {"torch", "celery", "redis", "minio", "prometheus-client"} <= _closure("train", declared, base)
    assert {"fastapi", "uvicorn", "tritonclient", "redis", "minio"} <= _closure("gateway", declared, base)
    assert "streamlit" not in _closure("train", declared, base) | _closure("gateway", declared, base)
