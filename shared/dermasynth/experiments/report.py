"""The experiment report: pooled metrics per arm, paired comparisons, verdicts, figures; JSON, Markdown and PNG.

:func:`build_report` computes everything from the runs' stored test predictions;
:func:`write_report` also draws the figures and writes ``report.json``, ``report.md`` and the PNGs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from dermasynth.classifier.evaluate import SplitPredictions
from dermasynth.data.manifest import Manifest
from dermasynth.experiments.config import Arm, EvaluationOptions, ExperimentConfig
from dermasynth.experiments.figures import Series, backbone_png, class_distribution_png, per_class_f1_png
from dermasynth.experiments.report_markdown import render_markdown
from dermasynth.gan.filtering import FilterReport
from dermasynth.gan.quality import GanReport
from dermasynth.gan.synthesis import SynthesisPlan
from dermasynth.metrics.classification import classification_metrics
from dermasynth.metrics.comparison import Difference, PairedComparison, paired_bootstrap
from dermasynth.metrics.figures import confusion_matrix_png
from dermasynth.metrics.pooled import PooledMetrics, pooled_metrics
from dermasynth.storage.base import ObjectStore

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"

METHOD_NOTES: tuple[str, ...] = (
    "Every run is evaluated on the same real held-out images of the real dataset; synthetic images only "
    "ever train (the held-out split is checked for synthetic rows before anything runs).",
    "Splits are lesion-level: no lesion has images in two splits.",
    "Seeds: an arm's figures pool its seeds' predictions (summed confusion matrices); '± sd' is the "
    "standard deviation of the per-seed figures.",
    "Intervals: 95% two-level bootstrap: each resample draws the test images (stratified: every class keeps "
    "its count) and, with evaluation.resample_seeds (the default), also draws each arm's seeds with "
    "replacement (as many as it has, independently per arm), pooling the drawn seeds' confusion matrices. "
    "The intervals therefore hold the variation between training runs as well as the test set's sampling "
    "error; seeds that disagree widen them. With one seed per arm only the test images are resampled.",
    "Equal compute: every arm of a backbone takes the same number of classifier optimizer steps "
    "(checked before training; pre-training and fine-tuning counted together; 'steps' in the runs table). "
    "The GAN's own cost (training, quality evaluation, synthesis, filter classifier) is listed per arm "
    "beside the results: a user pays it on top of the classifier's.",
    "Comparisons: a paired bootstrap of the difference A - B (the same resampled test images for both arms, "
    "pooled over seeds). 'better' / 'worse' when the 95% interval of the difference lies entirely above / "
    "below 0, otherwise 'cannot be told apart'; a class with fewer test images than the evaluation's "
    "min_support gets no per-class verdict ('too few test images'). Each verdict holds at the 95% level on "
    "its own; with many classes and comparisons, some 'better'/'worse' verdicts are expected by chance.",
    "With one seed per arm a verdict can reflect one run's luck; use at least 3 seeds ('± sd' is their spread).",
)


class RunRecord(BaseModel):
    """One trained and evaluated run of the grid."""

    arm: str
    backbone: str
    seed: int
    key: str = Field(description="runs/{key} in the experiment's store")
    dataset: str = Field(description="content key of the dataset it trained on")
    best_epoch: int
    epochs_run: int
    best_val_balanced_accuracy: float
    train_seconds: float
    classifier_steps: int = Field(default=0, description="optimizer steps taken (pre-training included)")
    pretrain_run: str | None = Field(default=None, description="runs/{key} of the pre-training phase, if any")
    train_counts: dict[str, int]
    train_sources: dict[str, int]
    evaluation: str = Field(description="where its metrics.json and predictions.npz are")
    accuracy: float
    balanced_accuracy: float
    macro_f1: float


class SynthesisInfo(BaseModel):
    """The GAN and the synthetic dataset the synthetic arms trained on."""

    gan: str = Field(description="gans/{key} in the experiment's store")
    synthetic: str = Field(description="content key of the synthetic dataset")
    generator_id: str
    gan_steps: int
    gan_seconds: float
    gan_image_size: int
    plan: SynthesisPlan
    before: dict[str, int] = Field(description="training images per class, real only")
    after: dict[str, int] = Field(description="training images per class, real + synthetic")
    synthesis_seconds: float = 0.0
    filter: FilterReport | None = Field(default=None, description="what filtered synthesis kept per class")


class ArmCost(BaseModel):
    """What a synthetic arm's images cost before its classifier trained (the GAN is paid once per distinct GAN)."""

    gan: str
    gan_steps: int
    gan_image_size: int
    gan_seconds: float
    quality_seconds: float = 0.0
    synthesis_seconds: float = 0.0
    filter_seconds: float = Field(default=0.0, description="the real-only filter classifier's training")

    @property
    def total_seconds(self) -> float:
        return self.gan_seconds + self.quality_seconds + self.synthesis_seconds + self.filter_seconds


class RareClassAnswer(BaseModel):
    """Does ``arm`` raise the recall of a rare class over the baseline arm without lowering balanced accuracy?"""

    backbone: str
    arm: str
    baseline: str
    label: str
    support: int = Field(description="test images of the class")
    recall: Difference | None = Field(description="recall of arm - baseline (None: no test images)")
    balanced_accuracy: Difference
    answer: Literal["yes", "no", "too few test images"]
    reason: str


class ArmSummary(BaseModel):
    """An arm on one backbone, pooled over its seeds."""

    arm: str
    backbone: str
    seeds: list[int]
    metrics: PooledMetrics


class ArmComparison(BaseModel):
    """Two arms on one backbone."""

    backbone: str
    comparison: PairedComparison


class BackboneComparison(BaseModel):
    """Two backbones in one arm (``comparison.a`` and ``comparison.b`` are backbone names)."""

    arm: str
    comparison: PairedComparison


class ExperimentReport(BaseModel):
    """``report.json``: everything the Markdown report shows."""

    name: str
    dataset: str = Field(description="content key of the real dataset")
    classes: list[str]
    split: str
    images: dict[str, dict[str, int]] = Field(description="real dataset: split -> class -> images")
    arms: list[Arm]
    backbones: list[str]
    seeds: list[int]
    train: dict[str, Any] = Field(description="training options shared by every run")
    evaluation: EvaluationOptions
    synthesis: SynthesisInfo | None
    syntheses: dict[str, SynthesisInfo] = Field(default_factory=dict, description="synthetic arm -> its synthesis")
    costs: dict[str, ArmCost] = Field(default_factory=dict, description="synthetic arm -> its GAN cost")
    gan_quality: dict[str, GanReport] = Field(default_factory=dict, description="GAN key -> per-class quality")
    rare_classes: list[RareClassAnswer] = Field(default_factory=list)
    rare_rule: str = ""
    method: list[str]
    runs: list[RunRecord]
    summaries: list[ArmSummary]
    comparisons: list[ArmComparison]
    backbone_comparisons: list[BackboneComparison]
    figure_pair: tuple[str, str] | None = Field(description="(baseline, augmented) of the per-class F1 figure")
    headline: list[str]
    figures: dict[str, str] = Field(default_factory=dict, description="figure name -> file")

    def summary(self, arm: str, backbone: str) -> ArmSummary:
        """The pooled metrics of ``arm`` on ``backbone``.

        Raises:
            KeyError: if that pair was not run.
        """
        for s in self.summaries:
            if s.arm == arm and s.backbone == backbone:
                return s
        raise KeyError(f"no summary of arm {arm!r} on backbone {backbone!r}")


@dataclass
class ReportInputs:
    """What the runner hands the report."""

    config: ExperimentConfig
    manifest: Manifest
    dataset: str
    runs: list[RunRecord]
    predictions: dict[str, SplitPredictions] = field(repr=False)
    synthesis: SynthesisInfo | None = None
    synthetic_manifest: Manifest | None = None
    syntheses: dict[str, SynthesisInfo] = field(default_factory=dict)
    costs: dict[str, ArmCost] = field(default_factory=dict)
    gan_quality: dict[str, GanReport] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenReport:
    """The report and the keys of the files written."""

    report: ExperimentReport
    files: list[str]
    headline: list[str]


@dataclass(frozen=True)
class _Cell:
    """The predictions of one arm on one backbone: truth ``(N,)``, predicted classes and probabilities per seed."""

    truth: np.ndarray
    predicted: list[np.ndarray]
    probabilities: list[np.ndarray]
    seeds: list[int]


def _cells(inputs: ReportInputs) -> tuple[list[str], np.ndarray, dict[tuple[str, str], _Cell]]:
    """Group the runs' predictions by (arm, backbone), checking every run predicted the same images."""
    grouped: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in inputs.runs:
        grouped[run.arm, run.backbone].append(run)
    first = inputs.predictions[inputs.runs[0].key]
    for run in inputs.runs:
        p = inputs.predictions[run.key]
        if p.images != first.images or p.classes != first.classes or not np.array_equal(p.targets, first.targets):
            raise ValueError(
                f"run {run.key} ({run.arm}, {run.backbone}, seed {run.seed}) was evaluated on other "
                "images or classes than the others; a paired comparison needs the same test images"
            )
    cells = {
        key: _Cell(
            truth=first.targets,
            seeds=[r.seed for r in runs],
            predicted=[inputs.predictions[r.key].probabilities.argmax(axis=1) for r in runs],
            probabilities=[inputs.predictions[r.key].probabilities for r in runs],
        )
        for key, runs in grouped.items()
    }
    return first.classes, first.targets, cells


def _headline(comparisons: list[ArmComparison], classes: list[str]) -> list[str]:
    """The verdicts in words: the first pair (the question asked) in full, the others by balanced accuracy."""
    if not comparisons:
        return []
    question = (comparisons[0].comparison.a, comparisons[0].comparison.b)
    lines = []
    for entry in comparisons:
        c = entry.comparison
        lines.append(f"[{entry.backbone}] balanced accuracy: {c.statement('balanced_accuracy')}")
        if (c.a, c.b) != question:
            continue
        lines.append(f"[{entry.backbone}] macro-F1: {c.statement('macro_f1')}")
        by_verdict: dict[str, list[str]] = defaultdict(list)
        for label in classes:
            if label in c.per_class:
                by_verdict[c.per_class[label]["f1"].verdict].append(label)
        parts = [f"{verdict} in {', '.join(labels)}" for verdict, labels in sorted(by_verdict.items())]
        lines.append(f"[{entry.backbone}] per-class F1 of {c.a} against {c.b}: {'; '.join(parts)}")
    return lines


MIN_SEEDS = 3


def _seed_warning(config: ExperimentConfig) -> list[str]:
    if len(config.seeds) >= MIN_SEEDS:
        return []
    return [
        f"only {len(config.seeds)} seed(s) per arm: the intervals cannot hold the variation between training "
        f"runs, so a verdict may be one run's luck (use at least {MIN_SEEDS})"
    ]


def rare_rule(config: ExperimentConfig) -> str:
    """The rule a rare-class 'yes' follows, in words."""
    return (
        f"'yes' when the arm's recall of the class exceeds the {config.baseline_arm} arm's by at least "
        f"{config.min_recall_gain * 100:g} points, the 95% interval of that difference lies above 0, and the "
        "interval of the balanced-accuracy difference does not lie below 0 (balanced accuracy not lowered); "
        f"classes with fewer than {config.evaluation.min_support} test images get no answer"
    )


def _rare_class_answers(
    config: ExperimentConfig,
    classes: list[str],
    truth: np.ndarray,
    cells: dict[tuple[str, str], _Cell],
    comparisons: list[ArmComparison],
) -> list[RareClassAnswer]:
    """Every arm against the baseline arm, per rare class present in the test split."""
    names = [a.name for a in config.arms]
    baseline = config.baseline_arm
    if baseline not in names:
        return []
    options = config.evaluation
    support = np.bincount(truth, minlength=len(classes))
    answers = []
    for backbone in config.backbones:
        known = {(c.comparison.a, c.comparison.b): c.comparison for c in comparisons if c.backbone == backbone}
        for arm in names:
            if arm == baseline:
                continue
            comparison = known.get((arm, baseline)) or paired_bootstrap(
                truth,
                cells[arm, backbone].predicted,
                cells[baseline, backbone].predicted,
                classes,
                names=(arm, baseline),
                bootstrap=options.bootstrap,
                seed=options.seed,
                min_support=options.min_support,
                resample_seeds=options.resample_seeds,
            )
            bacc = comparison.overall["balanced_accuracy"]
            for label in config.rare_classes:
                if label not in classes:
                    continue
                n = int(support[classes.index(label)])
                recall = comparison.per_class.get(label, {}).get("recall")
                answer: Literal["yes", "no", "too few test images"]
                if recall is None or n < options.min_support:
                    answer, reason = "too few test images", f"{n} test images (fewer than {options.min_support})"
                else:
                    gain = recall.difference >= config.min_recall_gain
                    sure = recall.ci.low > 0
                    kept = bacc.ci.high >= 0
                    answer = "yes" if gain and sure and kept else "no"
                    why = []
                    if not gain:
                        why.append(
                            f"recall gain {recall.difference * 100:+.1f} points < {config.min_recall_gain * 100:g}"
                        )
                    if not sure:
                        why.append("the recall interval does not lie above 0")
                    if not kept:
                        why.append("balanced accuracy lowered")
                    reason = "; ".join(why) or "all three conditions hold"
                answers.append(
                    RareClassAnswer(
                        backbone=backbone,
                        arm=arm,
                        baseline=baseline,
                        label=label,
                        support=n,
                        recall=recall,
                        balanced_accuracy=bacc,
                        answer=answer,
                        reason=reason,
                    )
                )
    return answers


def _rare_headline(config: ExperimentConfig, answers: list[RareClassAnswer], costs: dict[str, ArmCost]) -> list[str]:
    """Per backbone and rare class: which arms (if any) earn a 'yes', and what their GAN cost."""
    lines = []
    for backbone in config.backbones:
        for label in config.rare_classes:
            mine = [a for a in answers if a.backbone == backbone and a.label == label]
            if not mine:
                continue
            if all(a.answer == "too few test images" for a in mine):
                lines.append(f"[{backbone}] {label}: too few test images to answer")
                continue
            yes = [a for a in mine if a.answer == "yes"]
            if not yes:
                best = max(
                    (a for a in mine if a.recall is not None), key=lambda a: a.recall.difference if a.recall else 0
                )
                assert best.recall is not None
                lines.append(
                    f"[{backbone}] {label}: no arm raises recall by {config.min_recall_gain * 100:g} points over "
                    f"{best.baseline} without lowering balanced accuracy (largest change: {best.arm} "
                    f"{best.recall.difference:+.3f} [{best.recall.ci.low:+.3f}, {best.recall.ci.high:+.3f}])"
                )
                continue
            parts = []
            for a in yes:
                assert a.recall is not None
                cost = costs.get(a.arm)
                paid = f", GAN cost {cost.total_seconds:.0f} s" if cost else ""
                parts.append(
                    f"{a.arm} {a.recall.difference:+.3f} [{a.recall.ci.low:+.3f}, {a.recall.ci.high:+.3f}]{paid}"
                )
            lines.append(f"[{backbone}] {label}: YES over {yes[0].baseline}: " + "; ".join(parts))
    return lines


def build_report(inputs: ReportInputs) -> ExperimentReport:
    """Pool every arm over its seeds, compare the configured pairs of arms and every backbone with the first.

    Raises:
        ValueError: if the runs were not all evaluated on the same images.
    """
    config = inputs.config
    options = config.evaluation
    classes, truth, cells = _cells(inputs)
    summaries = [
        ArmSummary(
            arm=arm.name,
            backbone=backbone,
            seeds=cells[arm.name, backbone].seeds,
            metrics=pooled_metrics(
                truth,
                cells[arm.name, backbone].predicted,
                classes,
                bootstrap=options.bootstrap,
                seed=options.seed,
                resample_seeds=options.resample_seeds,
            ),
        )
        for backbone in config.backbones
        for arm in config.arms
    ]
    comparisons = [
        ArmComparison(
            backbone=backbone,
            comparison=paired_bootstrap(
                truth,
                cells[a, backbone].predicted,
                cells[b, backbone].predicted,
                classes,
                names=(a, b),
                bootstrap=options.bootstrap,
                seed=options.seed,
                min_support=options.min_support,
                resample_seeds=options.resample_seeds,
            ),
        )
        for backbone in config.backbones
        for a, b in config.pairs()
    ]
    reference = config.backbones[0]
    backbone_comparisons = [
        BackboneComparison(
            arm=arm.name,
            comparison=paired_bootstrap(
                truth,
                cells[arm.name, other].predicted,
                cells[arm.name, reference].predicted,
                classes,
                names=(other, reference),
                bootstrap=options.bootstrap,
                seed=options.seed,
                min_support=options.min_support,
                resample_seeds=options.resample_seeds,
            ),
        )
        for arm in config.arms
        for other in config.backbones[1:]
    ]
    rare = _rare_class_answers(config, classes, truth, cells, comparisons)
    return ExperimentReport(
        name=config.name,
        dataset=inputs.dataset,
        classes=classes,
        split=options.split,
        images=inputs.manifest.split_counts(),
        arms=config.arms,
        backbones=config.backbones,
        seeds=config.seeds,
        train=config.train.model_dump(mode="json", exclude={"model", "seed", "balance"}),
        evaluation=options,
        synthesis=inputs.synthesis,
        syntheses=inputs.syntheses,
        costs=inputs.costs,
        gan_quality=inputs.gan_quality,
        rare_classes=rare,
        rare_rule=rare_rule(config),
        method=list(METHOD_NOTES),
        runs=inputs.runs,
        summaries=summaries,
        comparisons=comparisons,
        backbone_comparisons=backbone_comparisons,
        figure_pair=config.figure_pair(),
        headline=_seed_warning(config) + _headline(comparisons, classes) + _rare_headline(config, rare, inputs.costs),
    )


def _figures(report: ExperimentReport, inputs: ReportInputs) -> dict[str, bytes]:
    """Every PNG of the report by file name."""
    classes, truth, cells = _cells(inputs)
    synthesis = report.synthesis
    before = synthesis.before if synthesis else inputs.manifest.class_counts("train")
    figures = {"class_distribution.png": class_distribution_png(before, synthesis.after if synthesis else None)}
    if report.figure_pair is not None:
        baseline, augmented = report.figure_pair
        for backbone in report.backbones:
            series = [
                Series(arm, [report.summary(arm, backbone).metrics.per_class.get(c, {}).get("f1") for c in classes])
                for arm in (baseline, augmented)
            ]
            figures[f"f1_{backbone}.png"] = per_class_f1_png(
                classes, series, f"{backbone}: per-class F1, {baseline} (baseline) against {augmented}"
            )
    arms = [a.name for a in report.arms]
    figures["backbones.png"] = backbone_png(
        arms,
        {
            name: [
                Series(backbone, [report.summary(arm, backbone).metrics.overall[metric] for arm in arms])
                for backbone in report.backbones
            ]
            for metric, name in (("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"))
        },
    )
    for (arm, backbone), cell in cells.items():
        pooled = classification_metrics(
            np.tile(truth, len(cell.seeds)), np.concatenate(cell.probabilities), classes, bootstrap=0
        )
        seeds = f"{len(cell.seeds)} seed{'s' if len(cell.seeds) > 1 else ''}"
        figures[f"confusion_{arm}_{backbone}.png"] = confusion_matrix_png(
            pooled, f"{arm} / {backbone} ({seeds} pooled): balanced accuracy {pooled.balanced_accuracy:.3f}"
        )
    return figures


def write_report(store: ObjectStore, inputs: ReportInputs) -> WrittenReport:
    """Build the report and write ``report.json``, ``report.md`` and its figures to ``store``."""
    report = build_report(inputs)
    figures = _figures(report, inputs)
    for name, data in figures.items():
        store.put_bytes(name, data, content_type="image/png")
    report.figures = {name.removesuffix(".png"): name for name in figures}
    store.put_bytes(REPORT_MARKDOWN, render_markdown(report).encode(), content_type="text/markdown")
    store.put_bytes(REPORT_JSON, report.model_dump_json(indent=2).encode(), content_type="application/json")
    return WrittenReport(report=report, files=[*figures, REPORT_MARKDOWN, REPORT_JSON], headline=report.headline)
