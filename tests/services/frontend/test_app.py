"""The Streamlit page, driven headless (AppTest) against a real gateway and tritonserver."""

from __future__ import annotations

import ast
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermasynth.auth import Scope
from services.frontend import app as app_module
from services.inference.launcher import free_port
from tests.services.gateway.serving import ServingPlatform, serving_redis
from tests.triton_fixtures import Served

APP = Path(app_module.__file__)


@pytest.fixture(scope="module")
def platform(served: Served, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingPlatform]:
    deployment = ServingPlatform(
        serving_redis(redis_url),
        tmp_path_factory.mktemp("fe"),
        triton_url=served.triton.url,
        store_root=served.store.root,
    )
    try:
        deployment.start_gateway()
        yield deployment
    finally:
        deployment.close()


def _page(gateway_url: str, key: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DERMASYNTH_GATEWAY_URL", gateway_url)
    monkeypatch.setenv("DERMASYNTH_API_KEY", key)
    page = AppTest.from_file(str(APP), default_timeout=120)
    page.run()
    return page


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_clinician_sees_predictions_abstentions_errors_and_heat_maps(
    served: Served, platform: ServingPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _page(platform.gateway_url, platform.key(Scope.CLINICIAN), monkeypatch)
    assert "not a diagnosis" in page.warning[0].value
    assert page.button[0].disabled  # nothing to send yet
    record = served.run.manifest.in_split("test")[0]
    lesion = served.run.manifest.path_of(record).read_bytes()
    page.file_uploader[0].set_value(
        [
            ("lesion.png", lesion, "image/png"),
            ("noise.png", _noise_png(), "image/png"),
            ("broken.png", b"hello", "image/png"),
        ]
    )
    page.sidebar.checkbox[0].check()
    page.sidebar.slider[0].set_value(2)
    page.run()
    page.button[0].click()
    page.run()
    assert not page.exception
    assert page.subheader[0].value == "2 of 3 images answered"
    errors = [e.value for e in page.error]
    assert any("noise.png" not in e and "Unsure: see a dermatologist" in e and "unlike the images" in e for e in errors)
    assert any(e.startswith("broken.png: cannot be used (not_an_image)") for e in errors)
    bars = [p.proto.text for p in page.get("progress")]
    assert len(bars) == 4  # top 2 classes for each answered image
    captions = [c.value for c in page.caption]
    assert sum("version 1" in c for c in captions) == 2
    images = page.get("image")
    assert len(images) >= 4  # two uploads shown, and a heat map for each


def test_gateway_problems_are_shown_not_raised(
    served: Served, platform: ServingPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = served.run.manifest.in_split("test")[0]
    upload = [("lesion.png", served.run.manifest.path_of(record).read_bytes(), "image/png")]
    for url, key, expected in [
        (platform.gateway_url, "wrong-key", "401"),
        (f"http://127.0.0.1:{free_port()}", "any", "unreachable"),
        (platform.gateway_url, "", "missing_key"),
    ]:
        page = _page(url, key, monkeypatch)
        page.file_uploader[0].set_value(upload)
        page.run()
        page.button[0].click()
        page.run()
        assert not page.exception
        assert expected in page.error[0].value, page.error[0].value


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_frontend_reaches_only_the_gateway() -> None:
    """The page imports the library's one gateway client and its schemas, nothing of the platform."""
    assert _imports(APP) <= {
        "__future__",
        "base64",
        "os",
        "streamlit",
        "dermasynth.gateway_client",
        "dermasynth.serving.schemas",
    }
    assert not list(APP.parent.glob("gateway*.py")), "the frontend keeps no client of its own"
