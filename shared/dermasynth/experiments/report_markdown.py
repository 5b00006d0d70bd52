"""The experiment report as Markdown: verdicts first, then setup, figures 6 and 5, table 2, backbones, details."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from dermasynth.metrics.comparison import Difference, PairedComparison
from dermasynth.metrics.pooled import CLASS_METRICS, Estimate

if TYPE_CHECKING:
    from dermasynth.experiments.report import ExperimentReport

_VERDICTS = "Verdicts"
_RARE = "Rare classes: does any arm raise recall over the sampler without lowering balanced accuracy?"
_SETUP = "Setup"
_COST = "Synthesis per arm and what it cost"
_QUALITY = "GAN quality per class"
_DISTRIBUTION = "Class distribution before and after synthesis (figure 6)"
_FIGURE5 = "Per-class F1, baseline against augmented (figure 5)"
_TABLE2 = "Per-class accuracy, precision, recall and F1 with 95% intervals (table 2)"
_BACKBONES = "Backbone comparison"
_DETAILS = "Paired comparisons per class"
_CONFUSIONS = "Confusion matrices"
_RUNS = "Runs"
SECTIONS: tuple[str, ...] = (
    _VERDICTS,
    _RARE,
    _SETUP,
    _COST,
    _QUALITY,
    _DISTRIBUTION,
    _FIGURE5,
    _TABLE2,
    _BACKBONES,
    _DETAILS,
    _CONFUSIONS,
    _RUNS,
)
"""The report's second-level headings, in order."""

_OVERALL_HEADER = ("balanced accuracy A - B", "verdict", "macro-F1 A - B", "verdict")
_OVERALL_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _estimate(e: Estimate | None) -> str:
    if e is None:
        return "n/a"
    text = f"{e.value:.3f}"
    if e.ci is not None:
        text += f" [{e.ci.low:.3f}, {e.ci.high:.3f}]"
    if e.seed_sd is not None:
        text += f" ±{e.seed_sd:.3f}"
    return text


def _difference(d: Difference) -> str:
    return f"{d.difference:+.3f} [{d.ci.low:+.3f}, {d.ci.high:+.3f}]"


def _verdict(d: Difference, a: str, b: str) -> str:
    return {
        "better": f"**{a} better**",
        "worse": f"**{a} worse**",
        "cannot be told apart": "cannot be told apart",
        "too few test images": "too few test images",
    }[d.verdict]


def _overall_cells(c: PairedComparison) -> tuple[str, str, str, str]:
    """Balanced accuracy and macro-F1 differences of a comparison, each with its verdict."""
    bacc, f1 = c.overall["balanced_accuracy"], c.overall["macro_f1"]
    return _difference(bacc), _verdict(bacc, c.a, c.b), _difference(f1), _verdict(f1, c.a, c.b)


def _verdicts(report: ExperimentReport) -> list[str]:
    lines = [f"## {_VERDICTS}", ""]
    if not report.comparisons:
        return [*lines, "Only one arm was run: nothing to compare.", ""]
    lines += [
        "Paired bootstrap of A - B on the same real test images, 95% interval, pooled over seeds "
        f"({len(report.seeds)} per arm"
        + (", resampled with the test images" if report.evaluation.resample_seeds and len(report.seeds) > 1 else "")
        + ").",
        "",
    ]
    for backbone in report.backbones:
        entries = [c.comparison for c in report.comparisons if c.backbone == backbone]
        lines += [f"### {backbone}", ""]
        lines += _table(["A", "B", *_OVERALL_HEADER], [(c.a, c.b, *_overall_cells(c)) for c in entries])
        lines += ["Per-class F1, A against B:", ""]
        lines += _table(
            ["class", *(f"{c.a} vs {c.b}" for c in entries)],
            [
                (
                    label,
                    *(
                        _verdict(c.per_class[label]["f1"], c.a, c.b) + f" ({_difference(c.per_class[label]['f1'])})"
                        if label in c.per_class
                        else "no test images"
                        for c in entries
                    ),
                )
                for label in report.classes
            ],
        )
    return lines


def _rare(report: ExperimentReport) -> list[str]:
    lines = [f"## {_RARE}", ""]
    if not report.rare_classes:
        return [*lines, "The baseline arm was not run (or no rare class has test images): no answer.", ""]
    lines += [f"Rule: {report.rare_rule}.", ""]
    for backbone in report.backbones:
        mine = [a for a in report.rare_classes if a.backbone == backbone]
        lines += [f"### {backbone}", ""]
        lines += _table(
            [
                "class",
                "test images",
                "arm",
                "recall arm - baseline",
                "balanced accuracy arm - baseline",
                "answer",
                "why",
            ],
            [
                (
                    a.label,
                    a.support,
                    a.arm,
                    "n/a" if a.recall is None else _difference(a.recall),
                    _difference(a.balanced_accuracy),
                    f"**{a.answer}**" if a.answer == "yes" else a.answer,
                    a.reason,
                )
                for a in mine
            ],
        )
    return lines


def _cost(report: ExperimentReport) -> list[str]:
    lines = [f"## {_COST}", ""]
    if not report.syntheses:
        return [*lines, "No arm trains on GAN images.", ""]
    lines += [
        "Every arm trained its classifier for the same number of steps (see Runs); the GAN's cost comes on top. "
        "Arms that share a GAN share its cost (it is paid once).",
        "",
    ]
    rows = []
    for arm, info in report.syntheses.items():
        cost = report.costs.get(arm)
        added = sum(info.after.values()) - sum(info.before.values())
        kept = ""
        if info.filter is not None:
            kept = ", ".join(
                f"{c} {r.kept}/{r.candidates} ({'-' if r.kept_fraction is None else f'{r.kept_fraction:.2f}'})"
                for c, r in info.filter.classes.items()
            )
        rows.append(
            (
                arm,
                f"`{info.gan[:12]}`",
                f"{info.gan_steps} steps, {info.gan_image_size} px",
                f"`{info.plan.model_dump_json(exclude_defaults=True)}`",
                added,
                kept or "-",
                "-" if cost is None else f"{cost.gan_seconds:.0f}",
                "-" if cost is None else f"{cost.synthesis_seconds + cost.quality_seconds:.0f}",
                "-" if cost is None else f"{cost.filter_seconds:.0f}",
                "-" if cost is None else f"{cost.total_seconds:.0f}",
            )
        )
    return lines + _table(
        [
            "arm",
            "GAN",
            "GAN budget",
            "plan",
            "images added",
            "filter kept/candidates (kept fraction)",
            "GAN train s",
            "synthesis + quality s",
            "filter classifier s",
            "total s",
        ],
        rows,
    )


def _quality(report: ExperimentReport) -> list[str]:
    lines = [f"## {_QUALITY}", ""]
    if not report.gan_quality:
        return [*lines, "Not measured (no GAN, or quality.enabled is false).", ""]
    for key, q in report.gan_quality.items():
        lines += [
            f"### GAN `{key[:12]}` ({q.image_size} px, step {q.gan_step})",
            "",
            f"Project feature space: {q.feature_space}.",
            "",
            f"Standard feature space: {q.standard_feature_space}.",
            "",
        ]
        standard = q.standard_weights is not None
        header = ["class", "real", "generated", "FID", "KID x1000", "precision", "recall", "near-copies"]
        header += ["standard FID", "standard KID x1000"] if standard else []

        def fmt(value: float | None, scale: float = 1.0) -> str:
            return "-" if value is None else f"{value * scale:.1f}"

        rows = []
        for label, c in q.classes.items():
            row: list[object] = [label, c.real_images, c.generated_images, fmt(c.fid), fmt(c.kid_mean, 1000)]
            row += [
                "-" if c.precision is None else f"{c.precision:.2f}",
                "-" if c.recall is None else f"{c.recall:.2f}",
                c.near_copies,
            ]
            row += [fmt(c.standard_fid), fmt(c.standard_kid_mean, 1000)] if standard else []
            rows.append(row)
        lines += _table(header, rows)
    return lines


def _setup(report: ExperimentReport) -> list[str]:
    lines = [
        f"## {_SETUP}",
        "",
        f"Real dataset `{report.dataset}`, evaluated on its **{report.split}** split "
        "(real images only). Images per split:",
        "",
    ]
    splits = list(report.images)
    lines += _table(["class", *splits], [(c, *(report.images[s].get(c, 0) for s in splits)) for c in report.classes])
    lines += ["Arms:", ""]
    lines += _table(
        ["arm", "what", "GAN images", "balance", "standard augmentation"],
        [
            (a.name, a.label(), "yes" if a.synthetic else "no", a.balance, "yes" if a.augment else "no")
            for a in report.arms
        ],
    )
    train = report.train
    lines += [
        f"Backbones: {', '.join(report.backbones)}. Seeds: {', '.join(map(str, report.seeds))}.",
        "",
        f"Training (every run): {train['epochs']} epochs, {train['image_size']} px, batch {train['batch_size']}, "
        f"{train['optimizer']} lr {train['lr']}, schedule {train['schedule']}"
        + (f", at most {train['max_steps_per_epoch']} steps per epoch" if train.get("max_steps_per_epoch") else "")
        + f", weights: {train['weights'] or 'from scratch'}.",
        "",
    ]
    s = report.synthesis
    if s is not None:
        added = {c: s.after.get(c, 0) - s.before.get(c, 0) for c in s.after}
        lines += [
            f"GAN `{s.gan}`: {s.gan_steps} steps at {s.gan_image_size} px ({s.gan_seconds:.0f} s), generator "
            f"`{s.generator_id[:16]}`; synthesis plan `{s.plan.model_dump_json(exclude_defaults=True)}` added "
            f"{sum(added.values())} images: " + ", ".join(f"{c} {n}" for c, n in added.items() if n) + ".",
            "",
        ]
    lines += ["Method:", "", *(f"- {note}" for note in report.method), ""]
    return lines


def _distribution(report: ExperimentReport) -> list[str]:
    lines = [f"## {_DISTRIBUTION}", "", f"![class distribution]({report.figures.get('class_distribution', '')})", ""]
    s = report.synthesis
    if s is None:
        return [*lines, "No arm trains on GAN images: the training split is shown as it is.", ""]
    return lines + _table(
        ["class", "before (real)", "after (real + GAN)", "GAN images"],
        [(c, s.before.get(c, 0), s.after.get(c, 0), s.after.get(c, 0) - s.before.get(c, 0)) for c in s.after],
    )


def _figure5(report: ExperimentReport) -> list[str]:
    lines = [f"## {_FIGURE5}", ""]
    if report.figure_pair is None:
        return [*lines, "Only one arm was run.", ""]
    baseline, augmented = report.figure_pair
    lines += [f"Baseline `{baseline}` against `{augmented}`; bars: pooled F1, whiskers: 95% interval.", ""]
    for backbone in report.backbones:
        lines += [f"![{backbone}]({report.figures.get(f'f1_{backbone}', '')})", ""]
        pair = [report.summary(arm, backbone).metrics for arm in (baseline, augmented)]
        lines += _table(
            ["class", f"F1 {baseline}", f"F1 {augmented}"],
            [(c, *(_estimate(m.per_class.get(c, {}).get("f1")) for m in pair)) for c in report.classes],
        )
    return lines


def _table2(report: ExperimentReport) -> list[str]:
    lines = [
        f"## {_TABLE2}",
        "",
        "Value pooled over seeds [95% bootstrap interval] ± sd between seeds; per-class accuracy is one-vs-rest.",
        "",
    ]
    for backbone in report.backbones:
        for arm in report.arms:
            m = report.summary(arm.name, backbone).metrics
            lines += [f"### {arm.name} / {backbone}", ""]
            rows = [
                (c, m.support[c], *(_estimate(m.per_class[c][k]) for k in CLASS_METRICS))
                for c in report.classes
                if c in m.per_class
            ]
            rows.append(("**overall**", m.n, _estimate(m.overall["accuracy"]), "", "", ""))
            lines += _table(["class", "support", *CLASS_METRICS], rows)
            lines += [
                f"Balanced accuracy {_estimate(m.overall['balanced_accuracy'])}, macro-F1 "
                f"{_estimate(m.overall['macro_f1'])}.",
                "",
            ]
    return lines


def _backbones(report: ExperimentReport) -> list[str]:
    lines = [f"## {_BACKBONES}", "", f"![backbones]({report.figures.get('backbones', '')})", ""]
    lines += _table(
        ["arm", *(f"{b} {_OVERALL_NAMES[m]}" for b in report.backbones for m in ("balanced_accuracy", "macro_f1"))],
        [
            (
                arm.name,
                *(
                    _estimate(report.summary(arm.name, b).metrics.overall[m])
                    for b in report.backbones
                    for m in ("balanced_accuracy", "macro_f1")
                ),
            )
            for arm in report.arms
        ],
    )
    if not report.backbone_comparisons:
        return [*lines, "One backbone was run: no paired comparison between backbones.", ""]
    lines += [f"Paired comparisons against {report.backbones[0]}:", ""]
    return lines + _table(
        ["arm", "A", "B", *_OVERALL_HEADER],
        [(e.arm, e.comparison.a, e.comparison.b, *_overall_cells(e.comparison)) for e in report.backbone_comparisons],
    )


def _comparison_details(c: PairedComparison) -> list[str]:
    rows = [
        (_OVERALL_NAMES[m], f"{d.a:.3f}", f"{d.b:.3f}", _difference(d), f"{d.p_value:.3f}", _verdict(d, c.a, c.b))
        for m, d in c.overall.items()
    ]
    rows += [
        (f"{label} {metric}", f"{d.a:.3f}", f"{d.b:.3f}", _difference(d), f"{d.p_value:.3f}", _verdict(d, c.a, c.b))
        for label, per in c.per_class.items()
        for metric, d in per.items()
    ]
    return _table(["metric", c.a, c.b, "A - B [95% CI]", "p", "verdict"], rows)


def _details(report: ExperimentReport) -> list[str]:
    lines = [f"## {_DETAILS}", ""]
    if not report.comparisons:
        return [*lines, "Only one arm was run.", ""]
    for entry in report.comparisons:
        c = entry.comparison
        lines += [f"### {c.a} against {c.b} / {entry.backbone}", "", *_comparison_details(c)]
    return lines


def _confusions(report: ExperimentReport) -> list[str]:
    lines = [f"## {_CONFUSIONS}", "", "Rows: true class; cells: share of the row and image count, seeds pooled.", ""]
    for backbone in report.backbones:
        for arm in report.arms:
            name = f"confusion_{arm.name}_{backbone}"
            lines += [f"![{arm.name} / {backbone}]({report.figures.get(name, '')})", ""]
    return lines


def _runs(report: ExperimentReport) -> list[str]:
    lines = [f"## {_RUNS}", ""]
    return lines + _table(
        [
            "arm",
            "backbone",
            "seed",
            "run",
            "train images",
            "epochs (best)",
            "val bal. acc.",
            "test accuracy",
            "test bal. acc.",
            "test macro-F1",
            "steps",
            "train s",
        ],
        [
            (
                r.arm,
                r.backbone,
                r.seed,
                f"`{r.key}`",
                sum(r.train_counts.values()),
                f"{r.epochs_run} ({r.best_epoch})",
                f"{r.best_val_balanced_accuracy:.3f}",
                f"{r.accuracy:.3f}",
                f"{r.balanced_accuracy:.3f}",
                f"{r.macro_f1:.3f}",
                r.classifier_steps,
                f"{r.train_seconds:.0f}",
            )
            for r in report.runs
        ],
    )


def render_markdown(report: ExperimentReport) -> str:
    """The whole report as Markdown (figures are linked by file name, beside ``report.md``)."""
    lines = [f"# Experiment {report.name}: does GAN augmentation help?", ""]
    if report.headline:
        lines += [*(f"- {line}" for line in report.headline), ""]
    parts = (
        _verdicts,
        _rare,
        _setup,
        _cost,
        _quality,
        _distribution,
        _figure5,
        _table2,
        _backbones,
        _details,
        _confusions,
        _runs,
    )
    for part in parts:
        lines += part(report)
    return "\n".join(lines)
