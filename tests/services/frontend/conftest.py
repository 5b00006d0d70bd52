"""The web app's pages, run headless with Streamlit's AppTest against a real gateway and tritonserver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dermasynth.config import get_settings
from services.frontend import session
from tests.services.gateway.serving import ServingPlatform, serving_platform
from tests.triton_fixtures import Served

PAGES = Path(session.__file__).resolve().parent / "views"
PAGE_TIMEOUT_S = 120


@pytest.fixture(scope="package")
def platform(served: Served, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingPlatform]:
    """A gateway (uvicorn) on the session's tritonserver and model store; at most 8 images per request."""
    with serving_platform(served, redis_url, tmp_path_factory.mktemp("webapp")) as deployment:
        deployment.start_gateway()
        deployment.start_worker("web", queues="default")  # dataset uploads are ingest jobs
        yield deployment


@pytest.fixture
def web_settings(platform: ServingPlatform, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The web app's settings point at the test gateway (change more with the returned monkeypatch)."""
    monkeypatch.setenv("DERMASYNTH_GATEWAY_URL", platform.gateway_url)
    monkeypatch.delenv("DERMASYNTH_API_KEY", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


OpenPage = Callable[..., AppTest]


@pytest.fixture
def open_page(web_settings: pytest.MonkeyPatch) -> OpenPage:
    """``open_page("jobs", key=..., role="engineer")``: the page, run once, signed in with ``key`` if given."""

    def open_(name: str, *, key: str | None = None, role: str = "engineer") -> AppTest:
        get_settings.cache_clear()
        page = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=PAGE_TIMEOUT_S)
        if key is not None:
            page.session_state[session.KEY_STATE] = key
            page.session_state[session.ROLE_STATE] = {role}
        page.run()
        assert not page.exception, page.exception
        return page

    return open_
