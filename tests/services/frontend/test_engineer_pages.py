"""The engineers' pages against a real gateway (and tritonserver for models): datasets, jobs, GAN samples,
experiments and models. Only ingest jobs (dataset uploads) run here, on a worker of the ``default`` queue;
GAN and training jobs are queued, not run: tests/e2e runs one to the end."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from dermasynth.auth import Scope
from dermasynth.data.manifest import Manifest
from dermasynth.gateway_client import GatewayClient
from dermasynth.jobs.records import run_prefix
from dermasynth.storage import FilesystemStore
from tests.data.zips import zip_folder
from tests.services.frontend.conftest import OpenPage
from tests.services.gateway.serving import ServingPlatform
from tests.triton_fixtures import Served, copy_version


@pytest.fixture(scope="module")
def engineer_key(platform: ServingPlatform) -> str:
    return platform.key(Scope.ENGINEER, Scope.DEPLOYER)


@pytest.fixture(scope="module")
def api(platform: ServingPlatform, engineer_key: str) -> Iterator[GatewayClient]:
    with GatewayClient(platform.gateway_url, engineer_key) as client:
        yield client


@pytest.fixture(scope="module")
def dataset_id(api: GatewayClient, demo_dataset: Manifest) -> str:
    info, _ = api.upload_dataset(demo_dataset.root, "demo for pages")
    return info.id


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_clinician_key_does_not_open_the_engineer_pages(open_page: OpenPage, platform: ServingPlatform) -> None:
    page = open_page("jobs")
    page.text_input(key="sign_in_engineer").input(platform.key(Scope.CLINICIAN))
    page.button[0].click().run()
    assert "not allowed" in page.error[0].value and "engineer" in page.error[0].value
    assert not page.selectbox  # no form without the engineer scope


def test_upload_a_dataset_and_read_its_report_and_classes(
    open_page: OpenPage, engineer_key: str, demo_dataset: Manifest
) -> None:
    page = open_page("datasets", key=engineer_key)
    archive = zip_folder(demo_dataset.root, wrap="demo")
    page.file_uploader(key="dataset_zip").set_value([("demo.zip", archive, "application/zip")])
    page.text_input(key="dataset_name").input("uploaded from the page")
    page.run()
    next(b for b in page.button if b.label == "Upload").click().run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    assert page.success[0].value.startswith("Dataset ")
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Files seen"] == metrics["Accepted"] and int(metrics["Accepted"]) >= len(demo_dataset.records)
    assert page.selectbox(key="dataset_pick").value == page.success[0].value.split()[1]
    assert page.get("vega_lite_chart")  # the class distribution
    splits = page.dataframe[1].value
    assert set(splits["split"]) == {"train", "val", "test"}


def test_a_job_form_from_the_api_schema_sends_what_changed_and_a_queued_job_can_be_cancelled(
    open_page: OpenPage, engineer_key: str, dataset_id: str, api: GatewayClient
) -> None:
    page = open_page("jobs", key=engineer_key)
    page.selectbox(key="job_kind").set_value("training").run()
    page.selectbox(key="job.training.dataset_id").set_value(dataset_id)
    page.number_input(key="job.training.config.epochs").set_value(1)
    page.number_input(key="job.training.config.image_size").set_value(32)
    page.selectbox(key="job.training.config.optimizer").set_value("sgd")
    next(b for b in page.button if b.label == "Submit").click().run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    job_id = page.success[0].value.rsplit(" ", 1)[-1]
    record = api.job(job_id)
    assert record.params["config"]["epochs"] == 1 and record.params["config"]["optimizer"] == "sgd"
    assert record.state.value == "queued"
    assert page.selectbox(key="job_watch").value == job_id  # the new job is the one watched
    assert any(b.label == "Cancel this job" for b in page.button)
    next(b for b in page.button if b.label == "Cancel this job").click().run()
    assert api.job(job_id).state.value == "cancelled"
    page.run()
    assert "cancelled" in page.error[0].value


def test_gan_sample_grids_per_class(
    open_page: OpenPage, engineer_key: str, dataset_id: str, api: GatewayClient, served: Served
) -> None:
    job = api.submit("synthesis", {"dataset_id": dataset_id, "gan": {"steps": 2, "image_size": 32}})
    api.cancel(job.id)
    store = FilesystemStore(served.store.root)
    for step in (10, 20):
        for label, colour in {"mel": (200, 0, 0), "nv": (0, 0, 200), "_all": (0, 200, 0)}.items():
            store.put_bytes(f"{run_prefix(job.id)}/gan/grids/step-{step}/{label}.png", _png(colour))
    page = open_page("samples", key=engineer_key)
    page.selectbox(key="samples_job").set_value(job.id).run()
    assert not page.exception and not page.error
    captions = [c for image in page.image for c in image.captions]
    assert captions == ["one row per class", "mel", "nv"]
    assert page.select_slider[0].value == 20


def test_an_experiment_report_with_its_figures(
    open_page: OpenPage, engineer_key: str, dataset_id: str, api: GatewayClient, served: Served
) -> None:
    job = api.submit("experiment", {"dataset_id": dataset_id})
    api.cancel(job.id)
    store = FilesystemStore(served.store.root)
    report = "# Experiment\n\n| arm | macro-F1 |\n|---|---|\n| real | 0.41 |\n\n![classes](class_distribution.png)\n"
    store.put_bytes(f"{run_prefix(job.id)}/report/report.md", report.encode())
    store.put_bytes(f"{run_prefix(job.id)}/report/class_distribution.png", _png((10, 10, 10)))
    page = open_page("experiments", key=engineer_key)
    page.selectbox(key="experiment_job").set_value(job.id).run()
    assert not page.exception and not page.error
    text = "\n".join(m.value for m in page.markdown)
    assert "| real | 0.41 |" in text and "![classes]" not in text
    assert [c for image in page.image for c in image.captions] == ["class_distribution.png"]


def test_models_versions_deploy_and_roll_back(open_page: OpenPage, engineer_key: str, served: Served) -> None:
    first, second = copy_version(served, "webapp"), copy_version(served, "webapp")
    page = open_page("models", key=engineer_key)
    page.selectbox(key="model_pick").set_value("webapp").run()
    assert "Live version: none" in "\n".join(m.value for m in page.markdown)
    versions = page.dataframe[0].value
    assert list(versions["version"]) == [second, first]
    for version in (first, second):
        page.selectbox(key="deploy_version_webapp").set_value(version).run()
        next(b for b in page.button if b.label == "Deploy this version").click().run()
        assert not page.error, [e.value for e in page.error]
        assert page.success[0].value == f"webapp version {version} is live"
    page.run()
    assert f"Live version: {second}" in "\n".join(m.value for m in page.markdown)
    next(b for b in page.button if b.label == "Roll back to the previous version").click().run()
    assert page.success[0].value == f"webapp version {first} is live again"
