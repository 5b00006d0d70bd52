"""Progress reports from long jobs (training, GAN training, synthesis, experiments).

An engine calls its :data:`ProgressCallback` between steps with a :class:`Progress`. The CLI turns
them into a progress bar; the job worker writes them to Redis, and raises :class:`Cancelled` from
the callback when the user cancelled the job: the engine lets it propagate after its last checkpoint
is safely stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field


class Progress(BaseModel):
    """Where a job is. Every field but ``phase`` is optional; engines fill what they know."""

    phase: str = Field(description="e.g. 'train', 'validate', 'gan', 'synthesize', 'arm 2/8'")
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="metrics so far, e.g. val balanced accuracy")
    message: str = ""


ProgressCallback = Callable[[Progress], None]


class Cancelled(Exception):
    """Raised from a progress callback to stop a job between steps; its last checkpoint is kept."""


def ignore_progress(_: Progress) -> None:
    """A callback that does nothing (the default for library calls)."""
