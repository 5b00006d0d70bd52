"""End to end in headless chromium: `make up`'s stack, a clinician and an engineer using the web app, `make down`.

An engineer signs in, submits a small training job from the form and watches it reach "succeeded", exports
it and deploys the version; a clinician signs in, uploads three photos, reads the summary and three cards,
and downloads the CSV. Screenshots are kept under var/screenshots (look at them).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from dermasynth.data.manifest import Manifest
from dermasynth.gateway_client import GatewayClient
from tests.conftest import delete_redis_prefix, free_port

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "var" / "screenshots"
UP_TIMEOUT_S = 600
JOB_TIMEOUT_S = 300

pytestmark = pytest.mark.e2e

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
from tests.e2e.browser import Page, find_browser, start_chromium  # noqa: E402


@dataclass
class Stack:
    web: str
    gateway: str
    clinician_key: str
    engineer_key: str
    var: Path
    env: dict[str, str]
    output: str


def _field(output: str, name: str) -> str:
    match = re.search(rf"^\s*{name}:\s+(\S+)", output, re.MULTILINE)
    assert match, f"'{name}' is not in make up's output:\n{output}"
    return match.group(1)


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make up` (deploy/local/up.sh) in a folder and under a Redis key prefix of its own."""
    var = tmp_path_factory.mktemp("local")
    prefix = f"dstest-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DERMASYNTH_LOCAL_DIR": str(var),
        "DERMASYNTH_REDIS_URL": redis_url,
        "DERMASYNTH_JOB_KEY_PREFIX": prefix,
        "DERMASYNTH_UP_GATEWAY_PORT": str(free_port()),
        "DERMASYNTH_UP_WEB_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }
    try:
        up = subprocess.run(
            ["bash", "deploy/local/up.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=UP_TIMEOUT_S
        )
        assert up.returncode == 0, f"make up failed:\n{up.stdout}\n{up.stderr}"
        yield Stack(
            web=_field(up.stdout, "web app"),
            gateway=_field(up.stdout, "API docs").removesuffix("/docs"),
            clinician_key=_field(up.stdout, "clinician key"),
            engineer_key=_field(up.stdout, "engineer key"),
            var=var,
            env=env,
            output=up.stdout,
        )
    finally:
        subprocess.run(["bash", "deploy/local/down.sh"], cwd=REPO, env=env, capture_output=True, timeout=300)
        delete_redis_prefix(redis_url, prefix)


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture
def page(browser_paths: tuple[str, str], tmp_path: Path) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = start_chromium(*browser_paths, downloads=tmp_path)
    try:
        yield Page(driver, SHOTS)
    finally:
        driver.quit()


def _sign_in(page: Page, key: str) -> None:
    page.type_into("API key", key)
    page.click("Sign in")
    page.wait("signing in", lambda: "Signed in with your API key" in page.text())


def test_an_engineer_trains_watches_and_deploys_a_model(stack: Stack, page: Page, demo_dataset: Manifest) -> None:
    with GatewayClient(stack.gateway, stack.engineer_key) as api:
        dataset, _ = api.upload_dataset(demo_dataset.root, "e2e demo lesions")
    page.open(f"{stack.web}/jobs")
    assert not page.all('[data-testid="stAppDeployButton"]')  # the toolbar is in viewer mode
    _sign_in(page, stack.engineer_key)
    page.choose("Kind", "training")
    page.choose("Dataset Id", dataset.id)
    page.expand("Config")
    page.type_into("Epochs", "1")
    page.type_into("Image Size", "32")
    page.type_into("Num Workers", "0")
    page.screenshot("engineer-1-job-form")
    page.click("Submit")
    submitted = page.wait(
        "the job to be submitted", lambda: re.search(r"Submitted training job ([0-9a-f]{32})", page.text())
    )
    job_id = submitted.group(1)
    page.wait("the job to run", lambda: "running" in page.text() or "succeeded" in page.text(), JOB_TIMEOUT_S)
    page.screenshot("engineer-2-job-progress")
    page.wait("the job to succeed", lambda: re.search(r"^succeeded$", page.text(), re.MULTILINE), JOB_TIMEOUT_S)
    assert "Metrics" in page.text()
    page.screenshot("engineer-3-job-succeeded")
    with GatewayClient(stack.gateway, stack.engineer_key) as api:
        assert api.job(job_id).params["config"]["epochs"] == 1

    page.go_to("Models")
    page.expand("Export a training job's model")
    page.click("Export as a new version", timeout=30)
    exported = page.wait("the export", lambda: re.search(r"classifier version (\d+) exported", page.text()), 300)
    page.click("Deploy this version")
    page.wait("the deploy", lambda: f"classifier version {exported.group(1)} is live" in page.text(), 300)
    page.wait("the live version in the table", lambda: f"Live version: {exported.group(1)}" in page.text())
    page.screenshot("engineer-4-model-deployed")


def test_a_clinician_classifies_three_photos_and_downloads_the_table(
    stack: Stack, page: Page, demo_dataset: Manifest, tmp_path: Path
) -> None:
    photos = [demo_dataset.path_of(record) for record in demo_dataset.in_split("test")[:3]]
    page.open(stack.web)
    page.wait("the disclaimer", lambda: "not a diagnosis" in page.text())
    assert not page.all('[data-testid="stAppDeployButton"]')
    _sign_in(page, stack.clinician_key)
    page.upload(photos)
    page.click("Classify")
    page.wait("the answers", lambda: "3 of 3 photos answered" in page.text(), 120)
    page.wait("the summary table", lambda: page.all('[data-testid="stDataFrame"]'))  # drawn before the cards
    cards = re.findall(r"^#(\d+) (\S+)$", page.text(), re.MULTILINE)  # each card's picture caption
    assert cards == [(str(i), p.name) for i, p in enumerate(photos, start=1)], cards
    assert "not a diagnosis" in page.text()
    page.screenshot("clinician-1-results")
    page.click("Download the table (CSV)")
    downloaded = page.wait("the CSV download", lambda: next(iter(tmp_path.glob("dermasynth-*.csv")), None), 30)
    rows = list(csv.DictReader(downloaded.open(encoding="utf-8")))
    assert [row["file"] for row in rows[:3]] == [p.name for p in photos]
    assert all(row["answer"] for row in rows[:3]) and "not a diagnosis" in rows[3]["file"]


def test_make_down_stops_exactly_what_make_up_started(stack: Stack) -> None:
    pids = [int(line.split()[1]) for line in (stack.var / "stack.pids").read_text().splitlines()]
    assert len(pids) == 4  # worker, tritonserver, gateway, web app (the test Redis was already running)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        down = subprocess.run(
            ["bash", "deploy/local/down.sh"], cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=300
        )
        assert down.returncode == 0, down.stderr
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert bystander.poll() is None  # nothing else is touched
        assert redis.Redis.from_url(stack.env["DERMASYNTH_REDIS_URL"]).ping()  # a Redis it did not start stays
        assert not (stack.var / "stack.pids").exists()
    finally:
        bystander.kill()
        bystander.wait()
