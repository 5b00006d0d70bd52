"""Render the Kubernetes overlays as `kubectl apply -k` would: `kubectl kustomize` over a copy of k8s/ with a
secrets.env written for each overlay (random values, as `make k8s-secrets` writes them)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu", "production")
GPU_OVERLAYS = ("gpu", "production")
# The Kubernetes release the manifests are validated against (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.34.0"


def secrets_env() -> str:
    """secrets.env as `make k8s-secrets` writes it: the example's fixed values, random hex for the empty ones."""
    lines = []
    for line in (K8S / "secrets.env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        lines.append(f"{key}={value or secrets.token_hex(24)}")
    return "\n".join(lines) + "\n"


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: cannot run `kubectl kustomize` (apt-get install kubectl)")
    return path


def copy_tree(destination: Path) -> Path:
    """A copy of k8s/ with a fresh secrets.env in every overlay; returns the copy's k8s folder."""
    root = destination / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in OVERLAYS:
        (root / "overlays" / overlay / "secrets.env").write_text(secrets_env())
    return root


def kustomize(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
