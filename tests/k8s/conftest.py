"""The rendered overlays, once per session (kubectl kustomize takes about a second each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s.render import OVERLAYS, copy_tree, kustomize


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="session")
def rendered(k8s_copy: Path) -> dict[str, list[dict[str, Any]]]:
    return {overlay: kustomize(k8s_copy / "overlays" / overlay) for overlay in OVERLAYS}
