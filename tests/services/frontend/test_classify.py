"""The clinicians' page against a real gateway and tritonserver: sign-in, chunks, position matching, CSV."""

from __future__ import annotations

import csv
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermasynth.auth import Scope
from dermasynth.config import get_settings
from services.frontend import session
from services.frontend.predictions import UNSURE
from tests.services.frontend.conftest import PAGE_TIMEOUT_S, PAGES, OpenPage
from tests.services.gateway.serving import ServingPlatform
from tests.triton_fixtures import Served


def _noise_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _lesions(served: Served, count: int) -> list[bytes]:
    manifest = served.run.manifest
    return [manifest.path_of(record).read_bytes() for record in manifest.in_split("test")[:count]]


def test_a_clinician_signs_in_once_and_no_key_is_a_widget_default(
    open_page: OpenPage, platform: ServingPlatform
) -> None:
    page = open_page("classify")
    assert "not a diagnosis" in page.warning[0].value  # the disclaimer shows before anything else
    assert [w.value for w in page.text_input] == [""]  # the only field is the empty key field
    assert not page.get("file_uploader")  # nothing to upload before signing in
    page.text_input(key="sign_in_clinician").input(platform.key(Scope.ENGINEER))
    page.button[0].click().run()
    assert "not allowed" in page.error[0].value and "clinician" in page.error[0].value
    page.text_input(key="sign_in_clinician").input("not-a-key")
    page.button[0].click().run()
    assert "not valid" in page.error[0].value
    page.text_input(key="sign_in_clinician").input(platform.key(Scope.CLINICIAN))
    page.button[0].click().run()
    assert not page.error and page.session_state[session.KEY_STATE]
    page.run()  # the next run needs no key
    assert page.get("file_uploader") and not page.text_input


def test_results_match_photos_by_position_in_chunks_and_survive_other_widgets(
    open_page: OpenPage, web_settings: object, platform: ServingPlatform, served: Served
) -> None:
    web_settings.setenv("DERMASYNTH_FRONTEND_PREDICTION_CHUNK", "16")  # type: ignore[attr-defined]
    page = open_page("classify", key=platform.key(Scope.CLINICIAN), role="clinician")
    lesions = _lesions(served, 8)
    # 11 photos (the gateway takes 8 a request): two phones' IMG_0001.jpg, a file that is no picture
    uploads = [("IMG_0001.jpg", lesions[0], "image/png"), ("IMG_0001.jpg", _noise_png(1), "image/png")]
    uploads += [(f"lesion-{i}.png", data, "image/png") for i, data in enumerate(lesions[1:], start=2)]
    uploads += [("notes.jpg", b"hello", "image/jpeg"), ("noise.png", _noise_png(2), "image/png")]
    page.file_uploader[0].set_value(uploads)
    page.run()
    classify = next(b for b in page.button if b.label == "Classify")
    classify.click().run()
    assert not page.exception
    assert page.subheader[0].value == "10 of 11 photos answered"
    table = page.dataframe[0].value
    assert list(table["#"]) == list(range(1, 12))
    assert list(table["file"])[:2] == ["IMG_0001.jpg", "IMG_0001.jpg"]
    assert table["answer"][9] == "Not usable"
    assert table["answer"][1] == UNSURE and table["answer"][10] == UNSURE  # the noise is flagged
    errors = [e.value for e in page.error]
    assert sum("does not look like" in e for e in errors) >= 2
    assert not any("OOD" in e or "score" in e or "<" in e for e in errors)  # no internal numbers
    captions = [c.value for c in page.caption]
    assert not any("OOD" in c for c in captions)
    # the cards follow the table in upload order: each answered card's picture caption names its position
    pictures = [caption for image in page.image for caption in image.captions]
    assert pictures[:3] == ["#1 IMG_0001.jpg", "#2 IMG_0001.jpg", "#3 lesion-2.png"], pictures
    # the results stay when an option changes
    page.sidebar.slider[0].set_value(2).run()
    assert page.subheader[0].value == "10 of 11 photos answered"
    downloads = page.get("download_button")
    assert len(downloads) == 2


def test_the_csv_download_holds_the_table(open_page: OpenPage, platform: ServingPlatform, served: Served) -> None:
    page = open_page("classify", key=platform.key(Scope.CLINICIAN), role="clinician")
    page.file_uploader[0].set_value([(f"p{i}.png", data, "image/png") for i, data in enumerate(_lesions(served, 3))])
    page.run()
    next(b for b in page.button if b.label == "Classify").click().run()
    from services.frontend.predictions import summary_csv

    rows = list(csv.DictReader(io.StringIO(summary_csv(page.dataframe[0].value.to_dict("records")).decode())))
    assert [row["file"] for row in rows[:3]] == ["p0.png", "p1.png", "p2.png"]


def test_gateway_problems_are_shown_not_raised(
    open_page: OpenPage, web_settings: object, platform: ServingPlatform, served: Served
) -> None:
    page = open_page("classify", key="revoked-or-wrong", role="clinician")
    page.file_uploader[0].set_value([("a.png", _lesions(served, 1)[0], "image/png")])
    page.run()
    next(b for b in page.button if b.label == "Classify").click().run()
    assert not page.exception
    assert "not valid" in page.error[0].value


def test_behind_an_identity_provider_people_sign_in_there_and_the_audit_trail_names_them(
    web_settings: pytest.MonkeyPatch, platform: ServingPlatform, served: Served
) -> None:
    service_key = platform.key(Scope.CLINICIAN, Scope.DELEGATE)  # the web app's own key may act for people
    web_settings.setenv("DERMASYNTH_FRONTEND_SERVICE_KEY", service_key)
    get_settings.cache_clear()
    page = AppTest.from_file(str(PAGES / "classify.py"), default_timeout=PAGE_TIMEOUT_S)
    page.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "test-cookie-secret",
        "client_id": "dermasynth",
        "client_secret": "test-client-secret",
        "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
    }
    page.run()
    assert not page.exception
    assert "not a diagnosis" in page.warning[0].value
    assert [b.label for b in page.button] == ["Sign in"]  # the provider's sign-in, not a key field
    assert not page.text_input and not page.get("file_uploader")

    page.user.update({"is_logged_in": True, "email": "dr.jones@example.org", "name": "Dr A. Jones"})
    page.run()
    assert not page.exception and not page.text_input  # signed in at the provider: still no key field
    page.file_uploader[0].set_value([("lesion.png", _lesions(served, 1)[0], "image/png")])
    page.run()
    next(b for b in page.button if b.label == "Classify").click().run()
    assert not page.exception and page.subheader[0].value == "1 of 1 photos answered"
    audit = httpx.get(
        f"{platform.gateway_url}/v1/audit",
        headers={"X-API-Key": platform.key(Scope.ADMIN)},
        params={"on_behalf_of": "dr.jones@example.org", "action": "/v1/predictions"},
        timeout=30,
    )
    assert audit.status_code == 200, audit.text
    [entry] = audit.json()["entries"]
    assert entry["key_id"] == service_key.split("_")[1] and entry["status"] == 200 and entry["images"] == 1
