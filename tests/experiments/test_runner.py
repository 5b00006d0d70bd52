from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dermasynth.classifier.checkpoint import RESULT
from dermasynth.classifier.evaluate import load_predictions
from dermasynth.data.manifest import Manifest
from dermasynth.experiments.config import STANDARD_ARMS, ExperimentConfig
from dermasynth.experiments.keys import dataset_key
from dermasynth.experiments.report import ExperimentReport
from dermasynth.experiments.report_markdown import SECTIONS
from dermasynth.experiments.runner import (
    EXPERIMENT_RESULT,
    ExperimentResult,
    check_held_out,
    plan_runs,
    run_experiment,
)
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import FilesystemStore
from dermasynth.storage.state_dicts import LATEST

TINY_TRAIN = {
    "image_size": 32,
    "epochs": 1,
    "batch_size": 8,
    "max_steps_per_epoch": 2,
    "num_workers": 0,
    "device": "cpu",
    "keep_epoch_checkpoints": False,
}
TINY_GAN = {
    "image_size": 16,
    "steps": 3,
    "batch_size": 8,
    "z_dim": 16,
    "w_dim": 32,
    "channel_base": 128,
    "max_channels": 16,
    "checkpoint_every": 3,
    "snapshot_every": 1000,
    "grid_every": 3,
    "grid_size": 2,
    "log_every": 3,
    "device": "cpu",
}
ALL_ARMS = ["real", "sampler", "gan", "gan_sampler", "augment", "loss"]


def tiny_config(**changes: Any) -> ExperimentConfig:
    """Every arm on one small backbone, one seed, a GAN of 3 steps: seconds per run on a CPU."""
    options: dict[str, Any] = {
        "name": "tiny",
        "arms": ALL_ARMS,
        "backbones": ["mobilenet_v3_small"],
        "seeds": [0],
        "train": TINY_TRAIN,
        "gan": TINY_GAN,
        "synthesis": {"mode": "balance", "ratio": 0.5},
        "evaluation": {"bootstrap": 200},
    }
    options.update(changes)
    return ExperimentConfig.model_validate(options)


class Recorder:
    """A progress callback that keeps every report (and can cancel at a chosen one)."""

    def __init__(self, cancel_when: Any = None) -> None:
        self.seen: list[Progress] = []
        self.cancel_when = cancel_when

    def __call__(self, progress: Progress) -> None:
        self.seen.append(progress)
        if self.cancel_when is not None and self.cancel_when(progress):
            raise Cancelled("cancelled by the test")

    def trained(self) -> set[str]:
        """The tasks (phases) in which a training or GAN step ran."""
        return {p.phase for p in self.seen if p.metrics.get("stage") in ("train", "gan")}


@pytest.fixture(scope="module")
def finished(
    demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ExperimentResult, Recorder]:
    folder = tmp_path_factory.mktemp("experiment")
    twin = {"name": "real_twin", "description": "the real arm again"}
    config = tiny_config(arms=[*ALL_ARMS, twin], comparisons=[("gan_sampler", "sampler"), ("real_twin", "real")])
    recorder = Recorder()
    result = run_experiment(config, demo_dataset, FilesystemStore(folder), folder, recorder)
    return folder, result, recorder


def test_every_arm_runs_on_real_held_out_images(
    finished: tuple[Path, ExperimentResult, Recorder], demo_dataset: Manifest
) -> None:
    folder, result, recorder = finished
    assert [r.arm for r in result.runs] == [*ALL_ARMS, "real_twin"]
    by_arm = {r.arm: r for r in result.runs}
    for arm in ("gan", "gan_sampler"):
        assert by_arm[arm].train_sources.get("synthetic", 0) > 0 and by_arm[arm].dataset == result.synthetic
    for arm in ("real", "sampler", "augment", "loss"):
        assert "synthetic" not in by_arm[arm].train_sources and by_arm[arm].dataset == dataset_key(demo_dataset)
    # one GAN and one synthetic dataset served both GAN arms; the GAN arms' training split is balanced further
    assert len(list((folder / "gans").iterdir())) == 1 and len(list((folder / "synthetic").iterdir())) == 1
    assert sum(by_arm["gan"].train_counts.values()) > sum(by_arm["real"].train_counts.values())
    store = FilesystemStore(folder)
    test_images = [r.image for r in demo_dataset.in_split("test")]
    for run in result.runs:
        kept = load_predictions(store, run.evaluation)
        assert kept.images == test_images  # the real held-out images, in the real dataset's order
    phases = {"filter", "gan", "quality", "synthesize", "arm 1/7", "arm 7/7", "report"}
    assert {p.phase for p in recorder.seen} >= phases
    # the real-only filter classifier (the GAN's quality feature space), GAN, quality, synthesis, 7 runs, report
    assert all(p.metrics["tasks"] == 12 for p in recorder.seen)


def test_the_report_has_every_section_and_figure(finished: tuple[Path, ExperimentResult, Recorder]) -> None:
    folder, result, _ = finished
    markdown = (folder / "report" / "report.md").read_text()
    headings = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == list(SECTIONS)
    report = ExperimentReport.model_validate_json((folder / "report" / "report.json").read_text())
    assert {f"report/{name}" for name in report.figures.values()} <= set(result.report)
    for name in (
        "class_distribution",
        "f1_mobilenet_v3_small",
        "backbones",
        "confusion_gan_sampler_mobilenet_v3_small",
    ):
        assert (folder / "report" / report.figures[name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({report.figures[name]})" in markdown
    assert report.synthesis is not None and report.synthesis.after != report.synthesis.before
    assert report.figure_pair == ("sampler", "gan_sampler")
    table2 = report.summary("gan_sampler", "mobilenet_v3_small").metrics
    assert set(next(iter(table2.per_class.values()))) == {"accuracy", "precision", "recall", "f1"}
    assert json.loads((folder / EXPERIMENT_RESULT).read_text())["headline"] == report.headline


def test_the_same_arm_twice_is_trained_once_and_never_told_apart(
    finished: tuple[Path, ExperimentResult, Recorder],
) -> None:
    folder, result, recorder = finished
    by_arm = {r.arm: r for r in result.runs}
    assert by_arm["real_twin"].key == by_arm["real"].key
    trained_tasks = recorder.trained()
    assert "arm 7/7" not in trained_tasks and "arm 1/7" in trained_tasks  # the twin found the real arm's run
    report = ExperimentReport.model_validate_json((folder / "report" / "report.json").read_text())
    twin = next(c.comparison for c in report.comparisons if c.comparison.a == "real_twin")
    verdicts = [
        *(d.verdict for d in twin.overall.values()),
        *(d.verdict for per in twin.per_class.values() for d in per.values()),
    ]
    assert set(verdicts) <= {"cannot be told apart", "too few test images"}
    assert all(d.difference == 0 for d in twin.overall.values())


def test_finished_work_is_reused_by_content(
    finished: tuple[Path, ExperimentResult, Recorder], demo_dataset: Manifest, tmp_path: Path
) -> None:
    first = finished[1]
    folder = tmp_path / "copy"
    shutil.copytree(finished[0], folder)
    again = Recorder()
    # another experiment in the same store sharing the GAN and two runs: nothing is trained again
    second = run_experiment(
        tiny_config(name="subset", arms=["sampler", "gan_sampler"]),
        demo_dataset,
        FilesystemStore(folder),
        folder,
        again,
        resume=True,
    )
    assert again.trained() == set()
    assert {r.key for r in second.runs} <= {r.key for r in first.runs} and second.gan == first.gan
    report = sorted(p.name for p in (folder / "report").iterdir())
    assert "confusion_real_mobilenet_v3_small.png" not in report  # the first experiment's report is gone
    assert ExperimentResult.model_validate_json((folder / EXPERIMENT_RESULT).read_text()) == second
    with pytest.raises(FileExistsError, match="already holds an experiment"):
        run_experiment(tiny_config(), demo_dataset, FilesystemStore(folder), folder)


def test_an_interrupted_experiment_resumes_arm_by_arm(demo_dataset: Manifest, tmp_path: Path) -> None:
    config = tiny_config(arms=["real", "sampler"], train={**TINY_TRAIN, "epochs": 2})
    store = FilesystemStore(tmp_path)
    runs = plan_runs(config, dataset_key(demo_dataset), None)

    def in_second_epoch_of_arm_2(p: Progress) -> bool:
        return p.phase == "arm 2/2" and p.metrics.get("stage") == "train" and p.epoch == 2

    with pytest.raises(Cancelled):
        run_experiment(config, demo_dataset, store, tmp_path, Recorder(in_second_epoch_of_arm_2))
    assert store.exists(f"{runs[0].prefix}/{RESULT}")
    assert store.exists(f"{runs[1].prefix}/{LATEST}") and not store.exists(f"{runs[1].prefix}/{RESULT}")

    resumed = Recorder()
    result = run_experiment(config, demo_dataset, store, tmp_path, resumed, resume=True)
    assert resumed.trained() == {"arm 2/2"}
    assert min(p.epoch or 0 for p in resumed.seen if p.metrics.get("stage") == "train") == 2
    assert [r.epochs_run for r in result.runs] == [2, 2]
    assert store.exists(EXPERIMENT_RESULT)
    untouched = Recorder()
    assert run_experiment(config, demo_dataset, store, tmp_path, untouched, resume=True) == result
    assert untouched.seen == []


def test_held_out_split_checks(demo_dataset: Manifest) -> None:
    rows = check_held_out(demo_dataset, "test")
    assert len(rows) == len(demo_dataset.in_split("test"))
    without_test = Manifest([r for r in demo_dataset.records if r.split != "test"], demo_dataset.root)
    with pytest.raises(ValueError, match="the test split holds no images"):
        check_held_out(without_test, "test")


def test_runs_are_keyed_by_dataset_options_and_seed() -> None:
    config = tiny_config(seeds=[0, 1], backbones=["mobilenet_v3_small", "resnet18"])
    runs = plan_runs(config, "real-key", "synthetic-key")
    assert len(runs) == 2 * len(ALL_ARMS) * 2 and len({r.key for r in runs}) == len(runs)
    assert {r.dataset for r in runs if r.arm.synthetic} == {"synthetic-key"}
    same = plan_runs(config, "real-key", "synthetic-key")
    assert [r.key for r in same] == [r.key for r in runs]
    other_data = plan_runs(config, "other-real-key", "synthetic-key")
    assert {r.key for r in other_data if not r.arm.synthetic}.isdisjoint(r.key for r in runs)
    runtime_only = tiny_config(
        seeds=[0, 1],
        backbones=["mobilenet_v3_small", "resnet18"],
        train={**TINY_TRAIN, "num_workers": 2, "device": "auto"},
    )
    assert [r.key for r in plan_runs(runtime_only, "real-key", "synthetic-key")] == [r.key for r in runs]
    assert runs[0].config.augment.enabled is False
    assert next(r for r in runs if r.arm == STANDARD_ARMS["augment"]).config.augment.enabled is True
    with pytest.raises(ValueError, match="no synthetic dataset"):
        plan_runs(config, "real-key", None)
    assert np.array_equal(sorted(r.seed for r in runs), sorted([0, 1] * (len(runs) // 2)))
