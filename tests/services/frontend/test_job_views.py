"""How a job's progress reads on the engineers' pages, and where its figures are found among its artefacts."""

from __future__ import annotations

from dermasynth.jobs.records import JobKind, JobRecord, JobState
from dermasynth.jobs.schemas import Artefact
from dermasynth.progress import Progress
from services.frontend.artefacts import grid_steps, report_files
from services.frontend.job_views import duration, fraction, progress_text


def _job(state: JobState, progress: Progress | None) -> JobRecord:
    return JobRecord(id="a" * 32, kind=JobKind.TRAINING, state=state, queue="train", params={}, progress=progress)


def test_a_running_job_reads_with_epoch_step_speed_and_eta() -> None:
    progress = Progress(
        phase="train", epoch=2, total_epochs=3, step=40, total_steps=80, loss=0.6931, images_per_s=123.4, eta_s=95
    )
    job = _job(JobState.RUNNING, progress)
    assert progress_text(job) == "running · train · epoch 2/3 · step 40/80 · loss 0.693 · 123 img/s · ETA 1 min 35 s"
    assert fraction(progress) == 0.5
    assert fraction(Progress(phase="gan", epoch=1, total_epochs=4)) == 0.25
    assert fraction(None) == 0.0
    assert progress_text(_job(JobState.SUCCEEDED, progress)) == "succeeded"
    assert duration(3725) == "1 h 2 min" and duration(7) == "7 s"


def test_grids_by_step_and_the_experiment_report_are_found_among_artefacts() -> None:
    paths = [
        "gan/grids/step-20/mel.png",
        "gan/grids/step-20/_all.png",
        "gan/grids/step-40/mel.png",
        "gan/checkpoints/step-40.pt",
        "report/report.md",
        "report/backbones.png",
        "report/sub/other.png",
        "arms/real/eval/test/confusion.png",
    ]
    artefacts = [Artefact(path=p, size=1) for p in paths]
    assert grid_steps(artefacts) == {
        20: {"mel": "gan/grids/step-20/mel.png", "_all": "gan/grids/step-20/_all.png"},
        40: {"mel": "gan/grids/step-40/mel.png"},
    }
    assert report_files(artefacts) == ("report/report.md", ["report/backbones.png"])
    assert report_files([Artefact(path="metrics.json", size=1)]) == (None, [])
