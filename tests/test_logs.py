"""Process logging: JSON lines a collector can parse, text for people, and test runners' handlers kept."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from dermasynth.config import Settings
from dermasynth.logs import JsonFormatter, configure_logging


def _record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad pixel")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("dermasynth.worker", logging.WARNING, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_a_json_line_holds_the_message_its_extras_and_the_traceback() -> None:
    line = JsonFormatter().format(_record("job %s: %d images", "j-1", 3, exc=True, job_id="j-1", kind="training"))
    entry = json.loads(line)
    assert entry["message"] == "job j-1: 3 images" and entry["level"] == "WARNING"
    assert entry["logger"] == "dermasynth.worker" and entry["time"].endswith("+00:00")
    assert entry["job_id"] == "j-1" and entry["kind"] == "training"
    assert "ValueError: bad pixel" in entry["exception"]
    assert "\n" not in line  # one object a line, even with a traceback


def test_unusual_values_do_not_break_a_line() -> None:
    entry = json.loads(JsonFormatter().format(_record("path %s", object(), quote='say "hi"\nthere')))
    assert entry["quote"] == 'say "hi"\nthere' and entry["message"].startswith("path <object")


@pytest.mark.parametrize(("log_format", "is_json"), [("json", True), ("text", False)])
def test_a_service_logs_in_the_configured_format(log_format: str, is_json: bool) -> None:
    """A fresh process, as a service starts: configure_logging installs the handler on an empty root."""
    code = (
        "import logging; from dermasynth.config import Settings; from dermasynth.logs import configure_logging;"
        f"configure_logging(Settings(log_format={log_format!r}, log_level='INFO'));"
        "logging.getLogger('dermasynth.gateway').info('ready on %d', 8080)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    line = result.stderr.strip().splitlines()[-1]
    if is_json:
        assert json.loads(line)["message"] == "ready on 8080"
    else:
        assert line.endswith("INFO dermasynth.gateway: ready on 8080")


def test_a_test_runners_handler_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        configure_logging(Settings(log_format="text"))
        with caplog.at_level(logging.INFO):
            logging.getLogger("dermasynth.x").info("still captured")
    finally:
        root.setLevel(level)
    assert "still captured" in caplog.text
