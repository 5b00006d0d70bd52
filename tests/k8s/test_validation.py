"""Every overlay renders with `kubectl kustomize`, and every object it renders is valid against Kubernetes
1.34's schemas (kubernetes-validate, strict) or KEDA's (tests/k8s/crds/keda.yaml)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.k8s import validation
from tests.k8s.render import OVERLAYS, kustomize

Doc = dict[str, Any]


# ids are not the bare overlay name: tests/conftest.py skips any test carrying the keyword "gpu" without CUDA
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[f"{o}-overlay" for o in OVERLAYS])
def test_every_rendered_object_is_valid(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "StatefulSet", "NetworkPolicy", "ScaledObject", "TriggerAuthentication", "Secret"} <= kinds
    assert [p for doc in docs for p in validation.problems(doc)] == []


def _first(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


BROKEN: list[tuple[str, Callable[[list[Doc]], Doc]]] = [
    # a misspelt field: the API server would drop it silently (kubectl --validate=strict refuses it)
    (
        "misspelt-field",
        lambda d: (
            _first(d, "Deployment", "gateway")["spec"].setdefault("replica", 2) and _first(d, "Deployment", "gateway")
        ),
    ),
    ("wrong-type", lambda d: _set(_first(d, "Service", "redis"), ["spec", "ports", 0, "port"], "6379")),
    (
        "unknown-kind-version",
        lambda d: _set(_first(d, "HorizontalPodAutoscaler"), ["apiVersion"], "autoscaling/v2beta1"),
    ),
    (
        "keda-number-not-string",
        lambda d: _set(_first(d, "ScaledObject"), ["spec", "triggers", 0, "metadata", "listLength"], 1),
    ),
    ("keda-misspelt-field", lambda d: _set(_first(d, "ScaledObject"), ["spec", "cooldownPeriods"], 300)),
    (
        "keda-redis-without-list",
        lambda d: _pop(_first(d, "ScaledObject"), ["spec", "triggers", 0, "metadata"], "listName"),
    ),
    (
        "keda-auth-without-key",
        lambda d: _pop(_first(d, "TriggerAuthentication"), ["spec", "secretTargetRef", 0], "key"),
    ),
    ("keda-unknown-kind", lambda d: _set(_first(d, "TriggerAuthentication"), ["kind"], "TriggerAuthentications")),
]


def _walk(doc: Doc, path: list[Any]) -> Any:
    node: Any = doc
    for part in path:
        node = node[part]
    return node


def _set(doc: Doc, path: list[Any], value: Any) -> Doc:
    _walk(doc, path[:-1])[path[-1]] = value
    return doc


def _pop(doc: Doc, path: list[Any], key: str) -> Doc:
    _walk(doc, path).pop(key)
    return doc


@pytest.mark.parametrize("breaks", [b[1] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_validation_refuses_a_broken_copy(rendered: dict[str, list[Doc]], breaks: Callable[[list[Doc]], Doc]) -> None:
    docs = copy.deepcopy(rendered["production"])
    assert validation.problems(breaks(docs))


def test_keda_schemas_cover_what_dermasynth_uses() -> None:
    assert set(validation.keda_schemas()) == {"ScaledObject", "ScaledJob", "TriggerAuthentication"}


def test_production_refuses_to_render_without_its_secrets(k8s_copy: Path, tmp_path: Path) -> None:
    import shutil

    copy_root = tmp_path / "k8s"
    shutil.copytree(k8s_copy, copy_root)
    (copy_root / "overlays" / "production" / "secrets.env").unlink()
    with pytest.raises(RuntimeError, match=r"secrets\.env"):
        kustomize(copy_root / "overlays" / "production")


def test_the_base_alone_has_no_secret_to_apply(k8s_copy: Path) -> None:
    docs = kustomize(k8s_copy / "base")
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_make_k8s_secrets_writes_what_the_overlay_needs(tmp_path: Path) -> None:
    """The operator's path: `make k8s-secrets OVERLAY=cpu` in a checkout, then `kubectl kustomize`."""
    import shutil
    import subprocess

    from tests.k8s import invariants as inv
    from tests.k8s.render import K8S, REPO

    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copytree(K8S, tmp_path / "k8s", ignore=shutil.ignore_patterns("secrets.env"))
    make = subprocess.run(["make", "k8s-secrets", "OVERLAY=cpu"], cwd=tmp_path, capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    written = tmp_path / "k8s" / "overlays" / "cpu" / "secrets.env"
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    values = dict(line.split("=", 1) for line in written.read_text().splitlines())
    assert all(len(v) == 48 for k, v in values.items() if not k.endswith("_ACCESS_KEY") and k != "MINIO_ROOT_USER")
    again = subprocess.run(["make", "k8s-secrets", "OVERLAY=cpu"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode != 0 and "not overwritten" in again.stdout + again.stderr
    docs = kustomize(tmp_path / "k8s" / "overlays" / "cpu")
    assert inv.check_secrets(docs) == []
