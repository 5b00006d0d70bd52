"""The experiment runner: does GAN augmentation help? Every arm x backbone x seed, trained, evaluated, compared.

:func:`run_experiment` trains at most one GAN (keyed by the real dataset and the GAN options), makes
one synthetic dataset from it (keyed by the GAN and the plan), trains every run of the grid (keyed by
its dataset and training options), evaluates each on the *real* held-out images of the real dataset,
and writes the report (:mod:`dermasynth.experiments.report`). Artefacts are found again by their keys:
a finished GAN or run is never trained twice, an interrupted one resumes from its checkpoint, and a
config that shares work with an earlier one in the same store reuses it.

Layout of the experiment's store (keys; the CLI uses the experiment folder, a job ``runs/{job_id}``):

=============================  =====================================================================
``experiment.json``            the config and the real dataset's key (written first)
``gans/{key}/``                the GAN run (:mod:`dermasynth.gan.artifacts`)
``runs/{key}/``                one classifier run; ``eval/{key}/`` its evaluation with predictions
``report/``                    ``report.md``, ``report.json`` and the PNG figures
``result.json``                the :class:`ExperimentResult`, written last (the experiment is complete)
=============================  =====================================================================

Synthetic images are files, so they are written under ``work_dir/synthetic/{key}/`` on local disk
(made again identically from the GAN and plan if that folder is lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import TrainResult, fit
from dermasynth.classifier.evaluate import (
    METRICS_NAME,
    EvaluationReport,
    SplitPredictions,
    evaluate_run,
    load_predictions,
)
from dermasynth.data.manifest import Manifest
from dermasynth.experiments.config import Arm, ExperimentConfig
from dermasynth.experiments.keys import dataset_key, evaluation_key, gan_key, run_key, synthetic_key
from dermasynth.experiments.report import ReportInputs, RunRecord, SynthesisInfo, write_report
from dermasynth.gan.synthesis import synthesize
from dermasynth.gan.training_loop import train_gan
from dermasynth.progress import Progress, ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore
from dermasynth.storage.prefixed import PrefixedStore

logger = logging.getLogger(__name__)

EXPERIMENT_RECORD = "experiment.json"
EXPERIMENT_RESULT = "result.json"
REPORT_PREFIX = "report"
SYNTHETIC_FOLDER = "synthetic"


class ExperimentRecord(BaseModel):
    """``experiment.json``: what the store holds an experiment of."""

    config: ExperimentConfig
    dataset: str = Field(description="content key of the real dataset")


class ExperimentResult(BaseModel):
    """``result.json``: what a finished experiment produced."""

    name: str
    config: ExperimentConfig
    dataset: str = Field(description="content key of the real dataset")
    gan: str | None = Field(default=None, description="key of the GAN run (gans/{key})")
    synthetic: str | None = Field(default=None, description="key of the synthetic dataset")
    runs: list[RunRecord]
    report: list[str] = Field(description="keys of the report's files")
    headline: list[str] = Field(description="the verdicts in words")
    wall_s: float


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid: an arm, a backbone and a seed, with its options and key."""

    arm: Arm
    backbone: str
    seed: int
    config: TrainConfig
    dataset: str
    key: str

    @property
    def prefix(self) -> str:
        return f"runs/{self.key}"

    def label(self) -> str:
        return f"{self.arm.name} / {self.backbone} / seed {self.seed}"


def plan_runs(config: ExperimentConfig, real: str, synthetic: str | None) -> list[PlannedRun]:
    """Every run of the grid (backbones, then arms, then seeds), each keyed by its dataset and options.

    Raises:
        ValueError: if an arm needs GAN images but ``synthetic`` is None.
    """
    runs = []
    for backbone in config.backbones:
        for arm in config.arms:
            if arm.synthetic and synthetic is None:
                raise ValueError(f"arm {arm.name!r} trains on GAN images, but no synthetic dataset was made")
            data = synthetic if arm.synthetic and synthetic is not None else real
            for seed in config.seeds:
                train = config.train_config(arm, backbone, seed)
                runs.append(
                    PlannedRun(
                        arm=arm,
                        backbone=backbone,
                        seed=seed,
                        config=train,
                        dataset=data,
                        key=run_key(data, train.result_fields()),
                    )
                )
    return runs


def check_held_out(manifest: Manifest, split: str) -> list[str]:
    """The images of ``split`` in manifest order (``path|sha256|label``), after making sure they are all real
    (or generated demo) images. Predictions are stored in this order, so it is part of an evaluation's key.

    Raises:
        ValueError: if the split is empty or holds a synthetic image.
    """
    rows = manifest.in_split(split)
    synthetic = [r.image for r in rows if r.source == "synthetic"]
    if synthetic:
        raise ValueError(
            f"the {split} split holds {len(synthetic)} synthetic images (e.g. {synthetic[0]}); "
            "experiments evaluate on real images only"
        )
    if not rows:
        raise ValueError(f"the {split} split holds no images to evaluate on; import the dataset with a {split} share")
    return [f"{r.image}|{r.sha256}|{r.label}" for r in rows]


class _Stage:
    """Forwards an engine's progress with the experiment's task (``arm 3/12``) and what it works on."""

    def __init__(self, progress: ProgressCallback, total: int) -> None:
        self.progress, self.total, self.index = progress, total, 0

    def next(self, phase: str, label: str) -> ProgressCallback:
        self.index += 1
        index, total = self.index, self.total

        def report(inner: Progress) -> None:
            detail = f"{inner.phase}: {inner.message}" if inner.message else inner.phase
            self.progress(
                inner.model_copy(
                    update={
                        "phase": phase,
                        "message": f"{label}: {detail}",
                        "metrics": {**inner.metrics, "task": index, "tasks": total, "stage": inner.phase},
                    }
                )
            )

        report(Progress(phase="start", message="starting"))
        return report


def _claim(store: ObjectStore, record: ExperimentRecord, resume: bool) -> ExperimentResult | None:
    """Write ``experiment.json``, or check the store's; return the stored result of a finished identical one."""
    if store.exists(EXPERIMENT_RECORD):
        if not resume:
            raise FileExistsError(
                "the experiment folder already holds an experiment (experiment.json); resume it "
                "or choose another folder"
            )
        previous = ExperimentRecord.model_validate_json(store.get_bytes(EXPERIMENT_RECORD))
        if previous == record and store.exists(EXPERIMENT_RESULT):
            logger.info("the experiment is already complete; returning its stored result")
            return ExperimentResult.model_validate_json(store.get_bytes(EXPERIMENT_RESULT))
        if previous != record:
            logger.info("the config differs from the stored experiment's; finished work with the same keys is reused")
            for key in [EXPERIMENT_RESULT, *store.list(f"{REPORT_PREFIX}/")]:  # the old result and report go
                store.delete(key)
    store.put_bytes(EXPERIMENT_RECORD, record.model_dump_json(indent=2).encode(), content_type="application/json")
    return None


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def run_experiment(
    config: ExperimentConfig,
    manifest: Manifest,
    store: ObjectStore,
    work_dir: Path,
    progress: ProgressCallback = ignore_progress,
    *,
    resume: bool = False,
    device: str | None = None,
) -> ExperimentResult:
    """Run (or resume) the whole ablation and write its report.

    Args:
        config: arms, backbones, seeds and the options shared by the runs.
        manifest: the real dataset (lesion-grouped splits); its held-out split must hold real images only.
        store: the experiment's store (see the module docstring for its layout).
        work_dir: a local folder for the synthetic images.
        progress: receives every engine's progress with ``phase`` set to the task (``gan``,
            ``synthesize``, ``arm i/n``, ``report``) and ``metrics['task']``/``metrics['tasks']``;
            a :class:`~dermasynth.progress.Cancelled` it raises propagates once the current engine
            has checkpointed.
        resume: continue an experiment already in ``store`` (without it, such a store is refused).
        device: where to evaluate and synthesize (default: CUDA when available); training runs where
            ``config.train.device`` says.

    Returns:
        The :class:`ExperimentResult` (also ``result.json``).

    Raises:
        FileExistsError: if ``store`` holds an experiment and ``resume`` is False.
        ValueError: a held-out split with synthetic images or none at all, or options the engines refuse.
        Cancelled: when the progress callback cancels.
    """
    began = time.perf_counter()
    split = config.evaluation.split
    held_out = check_held_out(manifest, split)
    real = dataset_key(manifest)
    stored = _claim(store, ExperimentRecord(config=config, dataset=real), resume)
    if stored is not None:
        return stored
    device = _device(device)
    stage = _Stage(
        progress, (2 if config.needs_gan else 0) + len(config.arms) * len(config.backbones) * len(config.seeds) + 1
    )

    gan: str | None = None
    synthetic: str | None = None
    synthetic_manifest: Manifest | None = None
    synthesis_info: SynthesisInfo | None = None
    if config.needs_gan:
        gan = gan_key(real, config.gan_fields())
        gan_store = PrefixedStore(store, f"gans/{gan}")
        gan_result = train_gan(config.gan, manifest, gan_store, stage.next("gan", f"GAN {gan}"), resume=True)
        synthetic = synthetic_key(gan, config.synthesis.model_dump(mode="json"))
        synthetic_manifest = synthesize(
            gan_store,
            manifest,
            config.synthesis,
            work_dir / SYNTHETIC_FOLDER / synthetic,
            stage.next("synthesize", f"synthetic dataset {synthetic}"),
            device=device,
        )
        if sorted(check_held_out(synthetic_manifest, split)) != sorted(held_out):
            raise ValueError(
                f"the synthetic dataset's {split} split differs from the real dataset's; synthetic "
                "datasets must keep the real held-out images unchanged"
            )
        synthesis_info = SynthesisInfo(
            gan=gan,
            synthetic=synthetic,
            generator_id=gan_result.generator_id,
            gan_steps=gan_result.step,
            gan_seconds=gan_result.seconds,
            gan_image_size=gan_result.image_size,
            plan=config.synthesis,
            before=manifest.class_counts("train"),
            after=synthetic_manifest.class_counts("train"),
        )

    evaluation = evaluation_key(
        held_out, config.evaluation.model_dump(mode="json", exclude={"min_support", "batch_size"})
    )
    records: list[RunRecord] = []
    predictions: dict[str, SplitPredictions] = {}
    runs = plan_runs(config, real, synthetic)
    for i, run in enumerate(runs, start=1):
        forward = stage.next(f"arm {i}/{len(runs)}", run.label())
        data = synthetic_manifest if run.arm.synthetic and synthetic_manifest is not None else manifest
        run_store = PrefixedStore(store, run.prefix)
        trained = fit(run.config, data, run_store, forward, resume=True)
        metrics, predicted = _evaluate(run_store, manifest, f"eval/{evaluation}", config, device, forward)
        predictions[run.key] = predicted
        records.append(_record(run, trained, metrics, f"{run.prefix}/eval/{evaluation}"))

    forward = stage.next("report", "report")
    forward(Progress(phase="report", message="paired bootstraps and figures"))
    written = write_report(
        PrefixedStore(store, REPORT_PREFIX),
        ReportInputs(
            config=config,
            manifest=manifest,
            dataset=real,
            runs=records,
            predictions=predictions,
            synthesis=synthesis_info,
            synthetic_manifest=synthetic_manifest,
        ),
    )
    result = ExperimentResult(
        name=config.name,
        config=config,
        dataset=real,
        gan=gan,
        synthetic=synthetic,
        runs=records,
        report=[f"{REPORT_PREFIX}/{key}" for key in written.files],
        headline=written.headline,
        wall_s=round(time.perf_counter() - began, 2),
    )
    store.put_bytes(EXPERIMENT_RESULT, result.model_dump_json(indent=2).encode(), content_type="application/json")
    return result


def _evaluate(
    run: ObjectStore,
    manifest: Manifest,
    prefix: str,
    config: ExperimentConfig,
    device: str,
    report: Callable[[Progress], Any],
) -> tuple[EvaluationReport, SplitPredictions]:
    """The run's evaluation on the real held-out images: stored, or made now (with its predictions)."""
    options = config.evaluation
    if run.exists(f"{prefix}/{METRICS_NAME}"):
        metrics = EvaluationReport.model_validate_json(run.get_bytes(f"{prefix}/{METRICS_NAME}"))
    else:
        report(Progress(phase="evaluate", message=f"{options.which} checkpoint on the {options.split} split"))
        metrics = evaluate_run(
            run,
            manifest,
            options.split,
            tta=options.tta,
            bootstrap=options.bootstrap,
            seed=options.seed,
            which=options.which,
            prefix=prefix,
            device=device,
            batch_size=options.batch_size,
            save_predictions=True,
        )
    return metrics, load_predictions(run, prefix)


def _record(run: PlannedRun, trained: TrainResult, metrics: EvaluationReport, evaluation: str) -> RunRecord:
    return RunRecord(
        arm=run.arm.name,
        backbone=run.backbone,
        seed=run.seed,
        key=run.key,
        dataset=run.dataset,
        best_epoch=trained.best_epoch,
        epochs_run=trained.epochs_run,
        best_val_balanced_accuracy=trained.best_val_balanced_accuracy,
        train_seconds=round(trained.wall_s, 2),
        train_counts=trained.train_counts,
        train_sources=trained.train_sources,
        evaluation=evaluation,
        accuracy=metrics.accuracy,
        balanced_accuracy=metrics.balanced_accuracy,
        macro_f1=metrics.macro_f1,
    )
