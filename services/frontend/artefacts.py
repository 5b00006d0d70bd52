"""Finding a job's figures among its artefacts: GAN sample grids per step, an experiment's report."""

from __future__ import annotations

import re
from collections.abc import Sequence

from dermasynth.jobs.schemas import Artefact

_GRID = re.compile(r"^(?:.*/)?grids/(?:step-(\d+)/)?([^/]+)\.png$")
OVERVIEW = "_all"


def grid_steps(artefacts: Sequence[Artefact]) -> dict[int, dict[str, str]]:
    """``{step: {class or "_all": artefact path}}`` of the GAN's sample grids (step 0: final grids)."""
    steps: dict[int, dict[str, str]] = {}
    for artefact in artefacts:
        match = _GRID.match(artefact.path)
        if match:
            step = int(match.group(1) or 0)
            steps.setdefault(step, {})[match.group(2)] = artefact.path
    return steps


def report_files(artefacts: Sequence[Artefact]) -> tuple[str | None, list[str]]:
    """The experiment report's markdown path and its figures (PNG), by path."""
    paths = [a.path for a in artefacts]
    markdown = next((p for p in paths if p.endswith("report/report.md")), None)
    if markdown is None:
        markdown = next((p for p in paths if p.endswith("report.md")), None)
    folder = markdown.rsplit("/", 1)[0] + "/" if markdown and "/" in markdown else ""
    figures = sorted(p for p in paths if p.startswith(folder) and p.endswith(".png") and "/" not in p[len(folder) :])
    return markdown, figures
