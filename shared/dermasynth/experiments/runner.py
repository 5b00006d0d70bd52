"""The experiment runner: does GAN augmentation help? Every arm x backbone x seed, trained, evaluated, compared.

:func:`run_experiment` trains at most one GAN (keyed by the real dataset and the GAN options), makes
one synthetic dataset from it (keyed by the GAN and the plan), trains every run of the grid (keyed by
its dataset and training options), evaluates each on the *real* held-out images of the real dataset,
and writes the report (:mod:`dermasynth.experiments.report`). Artefacts are found again by their keys:
a finished GAN or run is never trained twice, an interrupted one resumes from its checkpoint, and a
config that shares work with an earlier one in the same store reuses it.

Synthetic arms may each ask for their own GAN (``arm.gan``) and synthesis plan (``arm.synthesis``):
each distinct GAN and each distinct synthetic dataset is made once. Filtered synthesis is scored by
the *filter classifier*, a real-only run with the shared training options (first backbone and seed,
``filter_balance``), which is the same run as that arm's and so trained once. Pre-training arms are
two runs: real + GAN images for ``pretrain_fraction`` of the epochs, then real only from its weights.

Equal compute: before any classifier trains, the runner checks that every run of a backbone takes the
same number of optimizer steps (``epochs x min(max_steps_per_epoch, batches per epoch)``), pre-training
and fine-tuning counted together, and refuses the config otherwise; each run records its actual steps.
The GAN's own cost (its training, quality evaluation, synthesis and filter seconds) is recorded per arm.

Layout of the experiment's store (keys; the CLI uses the experiment folder, a job ``runs/{job_id}``):

=============================  =====================================================================
``experiment.json``            the config and the real dataset's key (written first)
``gans/{key}/``                a GAN run (:mod:`dermasynth.gan.artifacts`) with its ``gan_report.json``
``runs/{key}/``                one classifier run; ``eval/{key}/`` its evaluation with predictions
``report/``                    ``report.md``, ``report.json`` and the PNG figures
``result.json``                the :class:`ExperimentResult`, written last (the experiment is complete)
=============================  =====================================================================

Synthetic images are files, so they are written under ``work_dir/synthetic/{key}/`` on local disk
(made again identically from the GAN and plan if that folder is lost); so are the pre-trained weights
a fine-tuning run starts from (``work_dir/pretrained/{key}.pth``, from the pre-training run's store).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from dermasynth.classifier.checkpoint import load_trained
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
from dermasynth.experiments.report import ArmCost, ReportInputs, RunRecord, SynthesisInfo, write_report
from dermasynth.gan.artifacts import REPORT_KEY, GanResult
from dermasynth.gan.features import classifier_feature_space
from dermasynth.gan.quality import GanReport, evaluate_gan
from dermasynth.gan.synthesis import read_synthesis_record, synthesize
from dermasynth.gan.training_loop import train_gan
from dermasynth.progress import Progress, ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore
from dermasynth.storage.prefixed import PrefixedStore
from dermasynth.storage.state_dicts import LATEST, load_state

logger = logging.getLogger(__name__)

EXPERIMENT_RECORD = "experiment.json"
EXPERIMENT_RESULT = "result.json"
REPORT_PREFIX = "report"
SYNTHETIC_FOLDER = "synthetic"
PRETRAINED_FOLDER = "pretrained"


class ExperimentRecord(BaseModel):
    """``experiment.json``: what the store holds an experiment of."""

    config: ExperimentConfig
    dataset: str = Field(description="content key of the real dataset")


class ExperimentResult(BaseModel):
    """``result.json``: what a finished experiment produced."""

    name: str
    config: ExperimentConfig
    dataset: str = Field(description="content key of the real dataset")
    gan: str | None = Field(default=None, description="key of the first synthetic arm's GAN run (gans/{key})")
    synthetic: str | None = Field(default=None, description="key of the first synthetic arm's dataset")
    gans: dict[str, str] = Field(default_factory=dict, description="synthetic arm -> its GAN's key")
    synthetics: dict[str, str] = Field(default_factory=dict, description="synthetic arm -> its dataset's key")
    runs: list[RunRecord]
    report: list[str] = Field(description="keys of the report's files")
    headline: list[str] = Field(description="the verdicts in words")
    wall_s: float


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid: an arm, a backbone and a seed, with its options and key.

    A pre-training arm's cell has ``pretrain`` (the options of its first phase, on ``dataset``) and
    ``pretrain_key``; ``config`` is then the real-only fine-tuning, on ``finetune_dataset``.
    """

    arm: Arm
    backbone: str
    seed: int
    config: TrainConfig
    dataset: str
    key: str
    pretrain: TrainConfig | None = None
    pretrain_key: str | None = None
    finetune_dataset: str | None = None

    @property
    def prefix(self) -> str:
        return f"runs/{self.key}"

    def label(self) -> str:
        return f"{self.arm.name} / {self.backbone} / seed {self.seed}"


def plan_runs(
    config: ExperimentConfig, real: str, synthetic: str | dict[str, str] | None, work_dir: Path | None = None
) -> list[PlannedRun]:
    """Every run of the grid (backbones, then arms, then seeds), each keyed by its dataset and options.

    Args:
        config: the experiment.
        real: the real dataset's key.
        synthetic: the synthetic dataset's key of every synthetic arm (one key for all, or arm -> key).
        work_dir: where fine-tuning runs find their pre-trained weights (``pretrained/{key}.pth``).

    Raises:
        ValueError: if an arm needs GAN images but has no synthetic dataset.
    """
    runs = []
    for backbone in config.backbones:
        for arm in config.arms:
            key_of = synthetic.get(arm.name) if isinstance(synthetic, dict) else synthetic
            if arm.synthetic and key_of is None:
                raise ValueError(f"arm {arm.name!r} trains on GAN images, but no synthetic dataset was made")
            data = key_of if arm.synthetic and key_of is not None else real
            for seed in config.seeds:
                train = config.train_config(arm, backbone, seed)
                if arm.pretrain_fraction is None:
                    runs.append(PlannedRun(arm, backbone, seed, train, data, run_key(data, train.result_fields())))
                    continue
                first = config.pretrain_epochs(arm)
                pretrain = train.model_copy(update={"epochs": first})
                pre_key = run_key(data, pretrain.result_fields())
                weights = (work_dir or Path(".")) / PRETRAINED_FOLDER / f"{pre_key}.pth"
                finetune = train.model_copy(
                    update={"epochs": train.epochs - first, "weights": str(weights), "synthetic_weight": 1.0}
                )
                fields = {**finetune.result_fields(), "weights": f"runs/{pre_key}"}  # not where work_dir lies
                runs.append(
                    PlannedRun(
                        arm,
                        backbone,
                        seed,
                        finetune,
                        data,
                        run_key(real, fields),
                        pretrain=pretrain,
                        pretrain_key=pre_key,
                        finetune_dataset=real,
                    )
                )
    return runs


def planned_steps(config: TrainConfig, train_images: int) -> int:
    """Optimizer steps of a run on ``train_images`` training images (the engine drops a last partial batch)."""
    batches = train_images // config.batch_size if train_images >= config.batch_size else 1
    return config.epochs * min(batches, config.max_steps_per_epoch or batches)


def check_equal_compute(config: ExperimentConfig, steps: dict[tuple[str, str], int]) -> None:
    """Every arm of a backbone must take the same number of classifier steps.

    Args:
        steps: (arm, backbone) -> planned steps (pre-training and fine-tuning together).

    Raises:
        ValueError: naming each arm's steps and the remedy.
    """
    for backbone in config.backbones:
        mine = {arm: n for (arm, b), n in steps.items() if b == backbone}
        if len(set(mine.values())) > 1:
            listed = ", ".join(f"{arm} {n}" for arm, n in mine.items())
            raise ValueError(
                f"the arms would train for different numbers of steps on {backbone} ({listed}); equal "
                "compute needs train.max_steps_per_epoch at most the smallest arm's batches per epoch "
                "(and pre-training arms split the same epochs)"
            )


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
        work_dir: a local folder for the synthetic images and pre-trained weights.
        progress: receives every engine's progress with ``phase`` set to the task (``filter``, ``gan``,
            ``quality``, ``synthesize``, ``arm i/n``, ``report``) and ``metrics['task']``/``metrics['tasks']``;
            a :class:`~dermasynth.progress.Cancelled` it raises propagates once the current engine
            has checkpointed.
        resume: continue an experiment already in ``store`` (without it, such a store is refused).
        device: where to evaluate and synthesize (default: CUDA when available); training runs where
            ``config.train.device`` says.

    Returns:
        The :class:`ExperimentResult` (also ``result.json``).

    Raises:
        FileExistsError: if ``store`` holds an experiment and ``resume`` is False.
        ValueError: a held-out split with synthetic images or none at all, arms of unequal compute, or
            options the engines refuse.
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
    synthetic_arms = [a for a in config.arms if a.synthetic]
    gan_of = {a.name: gan_key(real, config.gan_fields(a)) for a in synthetic_arms}
    plans = {a.name: config.synthesis_plan(a) for a in synthetic_arms}
    filter_config = config.filter_config()
    filter_key = run_key(real, filter_config.result_fields())
    needs_filter = any(p.min_confidence is not None for p in plans.values()) or (
        bool(synthetic_arms) and config.quality.enabled
    )
    synthesis_of = {
        name: synthetic_key(
            gan_of[name],
            {**plan.model_dump(mode="json"), **({"filter": filter_key} if plan.min_confidence is not None else {})},
        )
        for name, plan in plans.items()
    }
    runs_total = sum(
        2 if a.pretrain_fraction is not None else 1 for a in config.arms for _ in config.backbones for _ in config.seeds
    )
    gans = sorted(set(gan_of.values()))
    tasks = int(needs_filter) + len(gans) * (1 + int(config.quality.enabled)) + len(set(synthesis_of.values()))
    stage = _Stage(progress, tasks + runs_total + 1)
    # equal compute, as far as it is known before anything trains: the real-data arms
    planned = plan_runs(config, real, dict.fromkeys(gan_of, "pending"), work_dir)
    real_train = len(manifest.in_split("train"))
    check_equal_compute(
        config,
        {(r.arm.name, r.backbone): planned_steps(r.config, real_train) for r in planned if not r.arm.synthetic},
    )

    filter_store = PrefixedStore(store, f"runs/{filter_key}")
    filter_seconds = 0.0
    if needs_filter:
        trained_filter = fit(
            filter_config,
            manifest,
            filter_store,
            stage.next("filter", f"real-only classifier {filter_key}"),
            resume=True,
        )
        filter_seconds = trained_filter.wall_s

    gan_results: dict[str, GanResult] = {}
    quality: dict[str, GanReport] = {}
    for key in gans:
        arm = next(a for a in synthetic_arms if gan_of[a.name] == key)
        gan_store = PrefixedStore(store, f"gans/{key}")
        gan_results[key] = train_gan(
            config.gan_config(arm), manifest, gan_store, stage.next("gan", f"GAN {key}"), resume=True
        )
        if config.quality.enabled:
            quality[key] = _quality(
                gan_store, manifest, config, filter_store, stage.next("quality", f"GAN {key}"), device
            )

    manifests: dict[str, Manifest] = {}
    infos: dict[str, SynthesisInfo] = {}
    for arm in synthetic_arms:
        key = synthesis_of[arm.name]
        plan = plans[arm.name]
        if key not in manifests:
            folder = work_dir / SYNTHETIC_FOLDER / key
            manifests[key] = synthesize(
                PrefixedStore(store, f"gans/{gan_of[arm.name]}"),
                manifest,
                plan,
                folder,
                stage.next("synthesize", f"synthetic dataset {key}"),
                device=device,
                filter_run=filter_store if plan.min_confidence is not None else None,
                filter_name=f"runs/{filter_key}" if plan.min_confidence is not None else None,
            )
            if sorted(check_held_out(manifests[key], split)) != sorted(held_out):
                raise ValueError(
                    f"the synthetic dataset's {split} split differs from the real dataset's; synthetic "
                    "datasets must keep the real held-out images unchanged"
                )
        record = read_synthesis_record(work_dir / SYNTHETIC_FOLDER / key)
        gan = gan_results[gan_of[arm.name]]
        infos[arm.name] = SynthesisInfo(
            gan=gan_of[arm.name],
            synthetic=key,
            generator_id=gan.generator_id,
            gan_steps=gan.step,
            gan_seconds=gan.seconds,
            gan_image_size=gan.image_size,
            plan=plan,
            before=manifest.class_counts("train"),
            after=manifests[key].class_counts("train"),
            synthesis_seconds=record.seconds if record else 0.0,
            filter=record.filter if record else None,
        )

    runs = plan_runs(config, real, {a: synthesis_of[a] for a in gan_of}, work_dir)
    sizes = {real: real_train, **{k: len(m.in_split("train")) for k, m in manifests.items()}}
    check_equal_compute(config, {(r.arm.name, r.backbone): _steps_of(r, sizes) for r in runs})
    evaluation = evaluation_key(
        held_out, config.evaluation.model_dump(mode="json", exclude={"min_support", "batch_size", "resample_seeds"})
    )
    records: list[RunRecord] = []
    predictions: dict[str, SplitPredictions] = {}
    for i, run in enumerate(runs, start=1):
        label = f"arm {i}/{len(runs)}"
        data = manifests[run.dataset] if run.arm.synthetic else manifest
        seconds, steps = 0.0, 0
        if run.pretrain is not None and run.pretrain_key is not None:
            pre_store = PrefixedStore(store, f"runs/{run.pretrain_key}")
            pre = fit(run.pretrain, data, pre_store, stage.next(label, run.label() + " (pre-training)"), resume=True)
            _export_weights(pre_store, Path(str(run.config.weights)))
            seconds, steps = pre.wall_s, _actual_steps(pre)
            data = manifest
        forward = stage.next(label, run.label())
        run_store = PrefixedStore(store, run.prefix)
        trained = fit(run.config, data, run_store, forward, resume=True)
        metrics, predicted = _evaluate(run_store, manifest, f"eval/{evaluation}", config, device, forward)
        predictions[run.key] = predicted
        records.append(
            _record(run, trained, metrics, f"{run.prefix}/eval/{evaluation}", seconds, steps + _actual_steps(trained))
        )

    forward = stage.next("report", "report")
    forward(Progress(phase="report", message="bootstraps over seeds and test images, figures"))
    costs = {
        arm.name: ArmCost(
            gan=gan_of[arm.name],
            gan_steps=infos[arm.name].gan_steps,
            gan_image_size=infos[arm.name].gan_image_size,
            gan_seconds=round(infos[arm.name].gan_seconds, 2),
            quality_seconds=round(quality[gan_of[arm.name]].seconds, 2) if gan_of[arm.name] in quality else 0.0,
            synthesis_seconds=infos[arm.name].synthesis_seconds,
            filter_seconds=round(filter_seconds, 2) if plans[arm.name].min_confidence is not None else 0.0,
        )
        for arm in synthetic_arms
    }
    written = write_report(
        PrefixedStore(store, REPORT_PREFIX),
        ReportInputs(
            config=config,
            manifest=manifest,
            dataset=real,
            runs=records,
            predictions=predictions,
            synthesis=next(iter(infos.values()), None),
            synthetic_manifest=next(iter(manifests.values()), None),
            syntheses=infos,
            costs=costs,
            gan_quality=quality,
        ),
    )
    first = synthetic_arms[0].name if synthetic_arms else None
    result = ExperimentResult(
        name=config.name,
        config=config,
        dataset=real,
        gan=gan_of.get(first) if first else None,
        synthetic=synthesis_of.get(first) if first else None,
        gans=gan_of,
        synthetics=synthesis_of,
        runs=records,
        report=[f"{REPORT_PREFIX}/{key}" for key in written.files],
        headline=written.headline,
        wall_s=round(time.perf_counter() - began, 2),
    )
    store.put_bytes(EXPERIMENT_RESULT, result.model_dump_json(indent=2).encode(), content_type="application/json")
    return result


def _steps_of(run: PlannedRun, sizes: dict[str, int]) -> int:
    if run.pretrain is None:
        return planned_steps(run.config, sizes[run.dataset])
    assert run.finetune_dataset is not None
    return planned_steps(run.pretrain, sizes[run.dataset]) + planned_steps(run.config, sizes[run.finetune_dataset])


def _actual_steps(trained: TrainResult) -> int:
    """Optimizer steps a finished run took (every batch of an epoch is one step)."""
    batch = trained.config.batch_size
    return sum(math.ceil(epoch.train_images / batch) for epoch in trained.history)


def _export_weights(run: ObjectStore, path: Path) -> None:
    """Write a finished pre-training run's last model as a state_dict file (the fine-tuning run's weights)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = load_state(run, LATEST)
    tmp = path.with_suffix(".tmp")
    torch.save(state["model"], tmp)
    tmp.replace(path)


def _quality(
    gan: ObjectStore,
    manifest: Manifest,
    config: ExperimentConfig,
    filter_run: ObjectStore,
    progress: ProgressCallback,
    device: str,
) -> GanReport:
    """The GAN's per-class quality: stored, or measured now in the filter classifier's feature space."""
    if gan.exists(REPORT_KEY):
        report = GanReport.model_validate_json(gan.get_bytes(REPORT_KEY))
        wanted = config.quality.inception_weights
        if report.standard_weights == (None if wanted is None else str(wanted)):
            return report
    space = classifier_feature_space(load_trained(filter_run, "best", device), "the experiment's filter classifier")
    return evaluate_gan(
        gan,
        manifest,
        space.extract,
        feature_space=space.description,
        samples_per_class=config.quality.samples_per_class,
        standard_weights=None if config.quality.inception_weights is None else Path(config.quality.inception_weights),
        device=device,
        progress=progress,
    )


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


def _record(
    run: PlannedRun,
    trained: TrainResult,
    metrics: EvaluationReport,
    evaluation: str,
    pretrain_seconds: float,
    steps: int,
) -> RunRecord:
    return RunRecord(
        arm=run.arm.name,
        backbone=run.backbone,
        seed=run.seed,
        key=run.key,
        dataset=run.dataset,
        best_epoch=trained.best_epoch,
        epochs_run=trained.epochs_run,
        best_val_balanced_accuracy=trained.best_val_balanced_accuracy,
        train_seconds=round(trained.wall_s + pretrain_seconds, 2),
        classifier_steps=steps,
        pretrain_run=run.pretrain_key,
        train_counts=trained.train_counts,
        train_sources=trained.train_sources,
        evaluation=evaluation,
        accuracy=metrics.accuracy,
        balanced_accuracy=metrics.balanced_accuracy,
        macro_f1=metrics.macro_f1,
    )
