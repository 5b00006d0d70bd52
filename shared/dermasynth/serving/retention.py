"""Keeping images sent for prediction, only when the operator turns it on, and only for a while.

Off by default (``DERMASYNTH_PREDICTION_RETENTION_DAYS=0``): the uploaded bytes are decoded to
pixels in memory and dropped. With a retention period, each image is stored with its metadata
stripped (EXIF, XMP, comments; :func:`dermasynth.data.images.strip_metadata`) under
``predictions/{YYYY-MM-DD}/{request_id}/{n}{suffix}``; :meth:`Retention.purge` deletes the days that
have run out (the gateway runs it at start-up and then every hour).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from dermasynth.data.images import strip_metadata
from dermasynth.storage.base import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "predictions"


class Retention:
    """Stores stripped copies of predicted images for ``days`` days (nothing when ``days`` is 0)."""

    def __init__(self, store: ObjectStore, days: int) -> None:
        if days < 0:
            raise ValueError(f"retention days must be 0 (off) or more, got {days}")
        self.store = store
        self.days = days

    @property
    def enabled(self) -> bool:
        return self.days > 0

    def keep(self, request_id: str, index: int, data: bytes, today: date | None = None) -> str | None:
        """Store image ``index`` of a request without its metadata; returns its key (None when off)."""
        if not self.enabled:
            return None
        stripped, suffix = strip_metadata(data)
        day = (today or datetime.now(UTC).date()).isoformat()
        key = f"{PREFIX}/{day}/{request_id}/{index}{suffix}"
        self.store.put_bytes(key, stripped, "image/jpeg" if suffix == ".jpg" else "image/png")
        return key

    def purge(self, today: date | None = None) -> int:
        """Delete images kept longer than the retention period (all of them when it is off); returns how many."""
        cutoff = (today or datetime.now(UTC).date()) - timedelta(days=self.days)
        removed = 0
        for key in self.store.list(PREFIX + "/"):
            try:
                day = date.fromisoformat(key.split("/")[1])
            except (IndexError, ValueError):
                continue
            if not self.enabled or day < cutoff:
                self.store.delete(key)
                removed += 1
        if removed:
            log.info("retention: removed %d prediction images older than %d days", removed, self.days)
        return removed
