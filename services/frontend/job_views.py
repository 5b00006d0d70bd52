"""How a job reads on the engineers' pages: a progress line, a fraction for the bar, labels for pick lists."""

from __future__ import annotations

from dermasynth.jobs.records import JobRecord
from dermasynth.progress import Progress


def duration(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def fraction(progress: Progress | None) -> float:
    """How far the current phase is, 0..1 (steps if known, else epochs)."""
    if progress is None:
        return 0.0
    if progress.total_steps and progress.step is not None:
        return min(1.0, max(0.0, progress.step / progress.total_steps))
    if progress.total_epochs and progress.epoch is not None:
        return min(1.0, max(0.0, progress.epoch / progress.total_epochs))
    return 0.0


def progress_text(record: JobRecord) -> str:
    """``succeeded`` or ``running · train · epoch 2/3 · step 40/66 · 123 img/s · ETA 12 s``."""
    parts = [record.state.value]
    progress = record.progress
    if progress is not None and not record.terminal:
        parts.append(progress.phase)
        if progress.epoch is not None:
            parts.append(f"epoch {progress.epoch}" + (f"/{progress.total_epochs}" if progress.total_epochs else ""))
        if progress.step is not None:
            parts.append(f"step {progress.step}" + (f"/{progress.total_steps}" if progress.total_steps else ""))
        if progress.loss is not None:
            parts.append(f"loss {progress.loss:.3f}")
        if progress.images_per_s:
            parts.append(f"{progress.images_per_s:.0f} img/s")
        if progress.eta_s is not None:
            parts.append(f"ETA {duration(progress.eta_s)}")
        if progress.message:
            parts.append(progress.message)
    return " · ".join(parts)


def job_label(record: JobRecord) -> str:
    """A pick-list label: ``training 3f2a9c1e (succeeded, 2026-11-28 12:40)``."""
    return f"{record.kind.value} {record.id[:8]} ({record.state.value}, {record.created_at:%Y-%m-%d %H:%M})"
