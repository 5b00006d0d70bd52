from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from dermasynth.serving.retention import Retention
from dermasynth.storage import FilesystemStore


def _jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0110] = "PatientCam 3000"  # Model
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 120, 90)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_off_keeps_nothing(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    retention = Retention(store, days=0)
    assert retention.keep("req", 0, _jpeg_with_exif()) is None
    assert store.list() == []


def test_on_keeps_a_stripped_copy_until_the_period_ends(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    retention = Retention(store, days=7)
    data = _jpeg_with_exif()
    assert b"CameraMaker" in data
    key = retention.keep("req1", 3, data, today=date(2026, 1, 1))
    assert key == "predictions/2026-01-01/req1/3.jpg"
    kept = store.get_bytes(key)
    assert b"CameraMaker" not in kept and not Image.open(io.BytesIO(kept)).getexif()
    retention.keep("req2", 0, data, today=date(2026, 1, 6))
    assert retention.purge(today=date(2026, 1, 8)) == 0
    assert retention.purge(today=date(2026, 1, 9)) == 1
    assert store.list() == ["predictions/2026-01-06/req2/0.jpg"]
    assert Retention(store, days=0).purge() == 1  # turned off: what was kept goes


def test_negative_days_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention days"):
        Retention(FilesystemStore(tmp_path), days=-1)
