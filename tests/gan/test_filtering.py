"""Filtered synthesis with a real (tiny) classifier and GAN trained on generated demo lesions: no stubs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dermasynth.classifier.checkpoint import load_trained
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.cli import app
from dermasynth.data.manifest import Manifest
from dermasynth.gan.artifacts import load_generator
from dermasynth.gan.filtering import ImageFilter
from dermasynth.gan.real_images import load_real_images, training_records
from dermasynth.gan.sampling import generate, image_seed
from dermasynth.gan.synthesis import SynthesisPlan, read_synthesis_record, synthesize
from dermasynth.storage import FilesystemStore

LABEL = "bkl"


@pytest.fixture(scope="module")
def real_classifier(demo_dataset: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small classifier trained briefly on the demo dataset's real images (a real run folder)."""
    folder = tmp_path_factory.mktemp("filter-run")
    config = TrainConfig(
        model="resnet18",
        image_size=32,
        epochs=1,
        batch_size=16,
        max_steps_per_epoch=4,
        num_workers=0,
        device="cpu",
        keep_epoch_checkpoints=False,
    )
    fit(config, demo_dataset, FilesystemStore(folder))
    return folder


def _independent_confidences(run: Path, images: torch.Tensor, label: str) -> torch.Tensor:
    """p(label) computed here from the run's checkpoint and preprocessing, without the filter's code."""
    trained = load_trained(FilesystemStore(run), "best", "cpu")
    size, pre = trained.preprocessing.image_size, trained.preprocessing
    x = F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return trained.model(x).softmax(dim=1)[:, trained.classes.index(label)]


def test_the_filter_keeps_exactly_the_candidates_above_the_threshold(
    tiny_gan: Path, real_classifier: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    need, factor, seed = 6, 3.0, 5
    generator = load_generator(FilesystemStore(tiny_gan), "cpu")
    seeds = [image_seed(seed, LABEL, i) for i in range(int(need * factor))]
    (candidates,) = generate(generator.generator, [generator.class_index(LABEL)] * len(seeds), seeds, batch_size=64)
    confidences = _independent_confidences(real_classifier, candidates, LABEL)
    ordered = confidences.sort(descending=True).values
    threshold = float(ordered[need // 2 - 1] + ordered[need // 2]) / 2  # half of `need` pass; no ties
    above = [s for s, c in zip(seeds, confidences.tolist(), strict=True) if c >= threshold]
    assert 0 < len(above) < need  # the threshold leaves the class short: every candidate is tried

    plan = SynthesisPlan(
        mode="counts", counts={LABEL: need}, min_confidence=threshold, max_candidates=factor, seed=seed
    )
    out = synthesize(
        FilesystemStore(tiny_gan),
        demo_dataset,
        plan,
        tmp_path / "filtered",
        filter_run=FilesystemStore(real_classifier),
    )
    kept = [r for r in out.records if r.source == "synthetic"]
    record = read_synthesis_record(tmp_path / "filtered")
    assert record is not None and record.filter is not None
    tally = record.filter.classes[LABEL]
    copies = tally.rejected_near_copy
    # exactly the confident candidates (less any near-copy), in seed order, each with its own confidence
    assert [r.seed for r in kept] == [s for s in above if s in {r.seed for r in kept}]
    assert len(kept) == len(above) - copies
    by_seed = dict(zip(seeds, confidences.tolist(), strict=True))
    for row in kept:
        assert row.filter_confidence is not None and row.filter_confidence >= threshold
        assert row.filter_confidence == pytest.approx(by_seed[row.seed], abs=1e-5)
    assert tally.candidates == len(seeds) and tally.kept == len(kept)
    assert tally.rejected_confidence == len(seeds) - len(above)
    assert tally.kept_fraction == pytest.approx(len(kept) / len(seeds))
    assert record.filter.shortfall == {LABEL: need - len(kept)}
    # the filter column survives the manifest file, and real rows have none
    again = Manifest.read(tmp_path / "filtered")
    assert [r.filter_confidence for r in again.records if r.source == "synthetic"] == [
        r.filter_confidence for r in kept
    ]
    assert all(r.filter_confidence is None for r in again.records if r.source != "synthetic")
    # synthetic images never reach validation or test
    assert {r.split for r in again.records if r.source == "synthetic"} == {"train"}
    assert again.in_split("test") == demo_dataset.in_split("test")


def test_a_threshold_of_zero_keeps_the_first_candidates_and_one_keeps_none(
    tiny_gan: Path, real_classifier: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    store, run = FilesystemStore(tiny_gan), FilesystemStore(real_classifier)
    plan = SynthesisPlan(mode="counts", counts={LABEL: 4}, min_confidence=0.0, max_candidates=2)
    out = synthesize(store, demo_dataset, plan, tmp_path / "all", filter_run=run)
    assert [r.seed for r in out.records if r.source == "synthetic"] == [image_seed(0, LABEL, i) for i in range(4)]
    record = read_synthesis_record(tmp_path / "all")
    assert record is not None and record.filter is not None and record.filter.classes[LABEL].candidates == 4

    strict = plan.model_copy(update={"min_confidence": 1.0})
    out = synthesize(store, demo_dataset, strict, tmp_path / "none", filter_run=run)
    assert not [r for r in out.records if r.source == "synthetic"]
    record = read_synthesis_record(tmp_path / "none")
    assert record is not None and record.filter is not None and record.filter.classes[LABEL].candidates == 8


def test_the_near_copy_check_rejects_real_training_images(real_classifier: Path, demo_dataset: Manifest) -> None:
    records, classes = training_records(demo_dataset)
    real = load_real_images(demo_dataset, records, classes, 16)
    image_filter = ImageFilter(
        load_trained(FilesystemStore(real_classifier)), demo_dataset, 16, 0.5, classes, "test run"
    )
    for index, label in enumerate(classes):
        own = real.images[real.labels == index]
        lesions = {r.lesion_id for r in records if r.label == label}
        if len(lesions) > 1:  # a copy of a real image is nearer to it than to any other lesion
            assert bool(image_filter.near_copies(own, label).all()), label
    noise = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert not bool(image_filter.near_copies(noise, classes[0]).any())


def test_filtered_synthesis_needs_both_the_classifier_and_the_threshold(
    tiny_gan: Path, real_classifier: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    plan = SynthesisPlan(mode="counts", counts={LABEL: 2}, min_confidence=0.5)
    with pytest.raises(ValueError, match="both min_confidence"):
        synthesize(FilesystemStore(tiny_gan), demo_dataset, plan, tmp_path / "a")
    with pytest.raises(ValueError, match="both min_confidence"):
        synthesize(
            FilesystemStore(tiny_gan),
            demo_dataset,
            plan.model_copy(update={"min_confidence": None}),
            tmp_path / "b",
            filter_run=FilesystemStore(real_classifier),
        )


def test_cli_sample_with_a_filter_reports_the_kept_fraction(
    tiny_gan: Path, real_classifier: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    common = ["gan", "sample", "--gan", str(tiny_gan), "--data", str(demo_dataset.root), "--device", "cpu"]
    args = [*common, "--out", str(out), "--plan", "counts", "--counts", f"{LABEL}=3,df=2"]
    result = runner.invoke(
        app, [*args, "--filter-run", str(real_classifier), "--min-confidence", "0.05"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "kept fraction" in said
    record = json.loads((out / "synthesis.json").read_text())
    assert set(record["filter"]["classes"]) == {LABEL, "df"}
    fraction = record["filter"]["classes"][LABEL]["kept_fraction"]
    assert f"{fraction:.3f}" in said
    rows = [r for r in Manifest.read(out).records if r.source == "synthetic"]
    assert rows and all(r.filter_confidence is not None and r.filter_confidence >= 0.05 for r in rows)

    only_one = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--min-confidence", "0.5"])
    assert only_one.exit_code == 2 and "--filter-run" in " ".join(only_one.output.split())
