"""Dataset uploads over the API: good ones land in the store; bad ones get a 4xx with a reason, never a 5xx."""

from __future__ import annotations

import warnings

import httpx
import pytest
from fastapi.testclient import TestClient

from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore
from services.gateway.app import create_app
from services.gateway.services import Services
from tests.data.samples import jpeg
from tests.data.zips import BAD_UPLOADS, imagefolder_zip, undecodable_zip, zip_members
from tests.services.platform import Platform


def _upload(client: TestClient, headers: dict[str, str], data: bytes, **form: str) -> httpx.Response:
    return client.post(
        "/v1/datasets",
        headers=headers,
        data={"name": "t", **form},
        files={"file": ("upload.zip", data, "application/zip")},
    )


def test_upload_list_get_report(
    client: TestClient, engineer: dict[str, str], dataset_id: str, demo_dataset: Manifest
) -> None:
    listed = client.get("/v1/datasets", headers=engineer).json()
    assert dataset_id in [d["id"] for d in listed]
    info = client.get(f"/v1/datasets/{dataset_id}", headers=engineer).json()
    assert info["stats"]["classes"] == demo_dataset.class_counts() and info["format"] == "manifest"
    report = client.get(f"/v1/datasets/{dataset_id}/report", headers=engineer).json()
    assert report["files_seen"] == report["accepted"] == len(demo_dataset)
    assert client.get("/v1/datasets/ds-missing", headers=engineer).status_code == 404


def test_a_partly_bad_upload_reports_each_rejected_file(client: TestClient, engineer: dict[str, str]) -> None:
    members = {f"nv/ok_{i}.jpg": jpeg() for i in range(4)} | {"mel/ok.jpg": jpeg(), "mel/broken.jpg": jpeg()[:300]}
    response = _upload(client, engineer, zip_members(members), format="imagefolder")
    assert response.status_code == 201, response.text
    report = response.json()["report"]
    assert report["accepted"] == 5 and report["rejections"] == [
        {"file": "mel/broken.jpg", "reason": "truncated", "detail": report["rejections"][0]["detail"]}
    ]


@pytest.mark.parametrize("name", sorted(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_with_a_reason(
    client: TestClient, engineer: dict[str, str], name: str, shared_platform: Platform
) -> None:
    data, reason = BAD_UPLOADS[name]
    store = FilesystemStore(shared_platform.root / "store")
    before = store.list("catalog/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        response = _upload(client, engineer, data)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["reason"] == reason and response.json()["detail"]
    assert store.list("catalog/") == before


def test_undecodable_images_and_wrong_layouts(client: TestClient, engineer: dict[str, str]) -> None:
    response = _upload(client, engineer, undecodable_zip())
    assert response.status_code == 422 and response.json()["reason"] == "no_valid_images"
    assert {r["reason"] for r in response.json()["report"]["rejections"]} >= {"truncated", "grayscale", "empty"}
    response = _upload(client, engineer, zip_members({"notes/readme.txt": b"hello"}), format="ham10000")
    assert response.status_code == 422 and response.json()["reason"] == "wrong_layout"
    assert "HAM10000_metadata.csv" in response.json()["detail"]


@pytest.mark.parametrize(
    "form",
    [{"val_frac": "0.5", "test_frac": "0.5"}, {"format": "coco"}, {"seed": "-1"}, {"name": ""}, {"val_frac": "abc"}],
)
def test_bad_upload_options(client: TestClient, engineer: dict[str, str], form: dict[str, str]) -> None:
    response = _upload(client, engineer, imagefolder_zip(), **form)
    assert response.status_code == 422, response.text


def test_missing_file_field(client: TestClient, engineer: dict[str, str]) -> None:
    response = client.post("/v1/datasets", headers=engineer, data={"name": "x"})
    assert response.status_code == 422


def test_request_size_limit(shared_platform: Platform, engineer: dict[str, str]) -> None:
    services = Services.from_settings(shared_platform.settings.model_copy(update={"max_upload_bytes": 20_000}))
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as small:
            big = imagefolder_zip(n_per_class=20)
            assert len(big) > 20_000
            response = _upload(small, engineer, big)
            assert response.status_code == 413, response.text
    finally:
        services.close()


def test_register_a_prefix_in_the_store(
    client: TestClient, engineer: dict[str, str], shared_platform: Platform
) -> None:
    store = FilesystemStore(shared_platform.root / "store")
    for label in ("akiec", "vasc"):
        for i in range(4):
            store.put_bytes(f"incoming/default/batch7/{label}/img_{i}.jpg", jpeg((20 * i, 80, 120)))
    response = client.post(
        "/v1/datasets/register", headers=engineer, json={"prefix": "incoming/default/batch7", "name": "batch 7"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["dataset"]["origin"] == "store"
    assert response.json()["dataset"]["stats"]["classes"] == {"akiec": 4, "vasc": 4}
    for body, reason in (
        ({"prefix": "incoming/default/nothing", "name": "x"}, "empty_prefix"),
        ({"prefix": "../etc", "name": "x"}, "invalid_path"),
    ):
        response = client.post("/v1/datasets/register", headers=engineer, json=body)
        assert response.status_code == 422 and response.json()["reason"] == reason, response.text
