from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermasynth.data.manifest import Manifest, Record
from dermasynth.gan.artifacts import load_generator
from dermasynth.gan.sampling import generate
from dermasynth.gan.synthesis import SynthesisPlan, plan_counts, synthesize
from dermasynth.gan.training_loop import train_gan
from dermasynth.progress import Progress
from dermasynth.storage import FilesystemStore
from tests.gan.conftest import tiny_config

SHA = "0" * 64


def _toy(counts: dict[str, int], held_out: int = 2) -> Manifest:
    """A manifest with ``counts`` train images per class and ``held_out`` val and test images of each."""
    rows = []
    for label, n in counts.items():
        for split, k in (("train", n), ("val", held_out), ("test", held_out)):
            rows += [
                Record(
                    image=f"{label}_{split}_{i}.png",
                    label=label,
                    lesion_id=f"{label}_{split}_{i}",
                    split=split,
                    source="real",
                    sha256=SHA,
                )
                for i in range(k)
            ]  # type: ignore[arg-type]
    return Manifest(rows, Path("/nowhere"))


TOY = {"akiec": 33, "bcc": 51, "df": 12, "nv": 670, "vasc": 14}


def test_balance_brings_every_class_exactly_to_the_largest() -> None:
    manifest = _toy(TOY)
    counts = plan_counts(manifest, SynthesisPlan(mode="balance"))
    assert counts == {"akiec": 637, "bcc": 619, "df": 658, "nv": 0, "vasc": 656}
    after = {label: n + counts[label] for label, n in manifest.class_counts("train").items()}
    assert set(after.values()) == {670}


def test_balance_with_a_ratio_at_least_and_explicit_counts() -> None:
    manifest = _toy(TOY)
    half = plan_counts(manifest, SynthesisPlan(mode="balance", ratio=0.5))
    assert half == {"akiec": 302, "bcc": 284, "df": 323, "nv": 0, "vasc": 321}
    assert plan_counts(manifest, SynthesisPlan(mode="at_least", at_least=40)) == {
        "akiec": 7,
        "bcc": 0,
        "df": 28,
        "nv": 0,
        "vasc": 26,
    }
    assert plan_counts(manifest, SynthesisPlan(mode="counts", counts={"df": 5, "VASC": 2})) == {
        "akiec": 0,
        "bcc": 0,
        "df": 5,
        "nv": 0,
        "vasc": 2,
    }
    only_rare = plan_counts(manifest, SynthesisPlan(mode="balance", classes=["df", "vasc"]))
    assert only_rare == {"akiec": 0, "bcc": 0, "df": 658, "nv": 0, "vasc": 656}


def test_synthetic_rows_already_in_train_count_towards_the_target() -> None:
    manifest = _toy({"df": 10, "nv": 20})
    extra = [
        Record(
            image=f"syn_{i}.png",
            label="df",
            lesion_id=f"S{i}",
            split="train",
            source="synthetic",
            sha256=SHA,
            generator="g",
            seed=i,
            truncation=1.0,
        )
        for i in range(4)
    ]
    assert plan_counts(manifest.with_records(extra), SynthesisPlan()) == {"df": 6, "nv": 0}


def test_bad_plans_are_refused_with_what_is_accepted() -> None:
    manifest = _toy(TOY)
    with pytest.raises(ValueError, match=r"classes \['mel'\] are not in the train split"):
        plan_counts(manifest, SynthesisPlan(mode="counts", counts={"mel": 3}))
    with pytest.raises(ValueError, match="mode 'at_least' needs at_least"):
        SynthesisPlan(mode="at_least")
    with pytest.raises(ValueError, match="counts must not be negative"):
        SynthesisPlan(mode="counts", counts={"df": -1})
    with pytest.raises(ValueError):
        SynthesisPlan(mode="balance", ratio=0)


def test_synthesize_writes_real_rows_and_synthetic_train_rows_with_provenance(
    tiny_gan: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    plan = SynthesisPlan(mode="at_least", at_least=12, truncation=0.7, seed=4)
    needed = plan_counts(demo_dataset, plan)
    seen: list[Progress] = []
    out = synthesize(FilesystemStore(tiny_gan), demo_dataset, plan, tmp_path / "aug", seen.append, batch_size=5)

    synthetic = [r for r in out.records if r.source == "synthetic"]
    assert {r.split for r in synthetic} == {"train"}  # never val or test
    assert [r for r in out.records if r.source != "synthetic"] == demo_dataset.records  # splits kept
    assert {s: c for s, c in out.split_counts().items() if s != "train"} == {
        s: c for s, c in demo_dataset.split_counts().items() if s != "train"
    }
    assert len(synthetic) == sum(needed.values()) > 0
    assert all(n >= 12 for n in out.class_counts("train").values())
    assert seen[-1].phase == "synthesize" and seen[-1].step == seen[-1].total_steps == len(synthetic)

    trained = load_generator(FilesystemStore(tiny_gan), "cpu")
    assert {r.generator for r in synthetic} == {trained.generator_id}
    assert {r.truncation for r in synthetic} == {0.7} and len({r.seed for r in synthetic}) == len(synthetic)
    reread = Manifest.read(tmp_path / "aug")
    assert reread.records == out.records
    for record in reread.records:
        path = reread.path_of(record)
        assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256

    # each image can be made again from its row: generator, class, seed, truncation
    row = synthetic[-1]
    assert row.seed is not None
    (again,) = generate(trained.generator, [trained.class_index(row.label)], [row.seed], truncation=0.7)
    assert np.array_equal(np.asarray(Image.open(reread.path_of(row))), again[0].permute(1, 2, 0).numpy())


def test_synthesize_is_idempotent_and_refuses_to_mix_datasets(
    tiny_gan: Path, demo_dataset: Manifest, tmp_path: Path
) -> None:
    gan = FilesystemStore(tiny_gan)
    plan = SynthesisPlan(mode="counts", counts={"df": 3})
    first = synthesize(gan, demo_dataset, plan, tmp_path / "aug")
    stamp = (tmp_path / "aug" / "manifest.csv").stat().st_mtime_ns
    calls: list[Progress] = []
    second = synthesize(gan, demo_dataset, plan, tmp_path / "aug", calls.append)
    assert second.records == first.records and not calls
    assert (tmp_path / "aug" / "manifest.csv").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="already holds another dataset"):
        synthesize(gan, demo_dataset, SynthesisPlan(mode="counts", counts={"df": 4}), tmp_path / "aug")
    with pytest.raises(ValueError, match="is the source dataset's folder"):
        synthesize(gan, demo_dataset, plan, demo_dataset.root)

    # synthesizing on top of a synthesized dataset continues the seeds instead of repeating them
    more = synthesize(gan, first, plan, tmp_path / "aug2")
    seeds = [r.seed for r in more.records if r.source == "synthetic"]
    assert len(seeds) == len(set(seeds)) == 6


def test_synthesize_refuses_classes_the_gan_never_learned(demo_dataset: Manifest, tmp_path: Path) -> None:
    gan = FilesystemStore(tmp_path / "gan")
    train_gan(tiny_config(steps=1, classes=["df", "vasc"]), demo_dataset, gan)
    with pytest.raises(ValueError, match=r"needs images of \['akiec', 'bcc', 'bkl', 'mel'\]"):
        synthesize(gan, demo_dataset, SynthesisPlan(), tmp_path / "out")
    out = synthesize(gan, demo_dataset, SynthesisPlan(classes=["df", "vasc"]), tmp_path / "out")
    labels = {r.label for r in out.records if r.source == "synthetic"}
    assert labels == {"df", "vasc"}
    largest = max(demo_dataset.class_counts("train").values())
    assert out.class_counts("train")["df"] == out.class_counts("train")["vasc"] == largest
