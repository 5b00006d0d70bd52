"""Each layout imports from a small fixture; bad files are reported by name and reason, never lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermasynth.data.formats import FormatError, detect_format
from dermasynth.data.importer import import_dataset
from dermasynth.data.manifest import Manifest
from tests.data.samples import BAD_FILES, jpeg, write

COLOURS = {"nv": (120, 80, 50), "mel": (40, 30, 30), "df": (200, 160, 140)}


def ham_fixture(root: Path) -> Path:
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    n = 0
    for label in COLOURS:
        for lesion in range(4):
            for _view in range(2):
                image_id = f"ISIC_{n:07d}"
                folder = "HAM10000_images_part_1" if n % 2 else "HAM10000_images_part_2"
                write(root / folder / f"{image_id}.jpg", jpeg(COLOURS[label]))
                rows.append(f"HAM_{label}{lesion},{image_id},{label},histo,50.0,male,back")
                n += 1
    (root / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_ham10000_with_two_image_folders(tmp_path: Path) -> None:
    src = ham_fixture(tmp_path / "src")
    manifest, report = import_dataset(src, tmp_path / "out", seed=1)
    assert report.format == "ham10000"
    assert (report.files_seen, report.accepted, report.rejected) == (24, 24, 0)
    assert manifest.class_counts() == {"df": 8, "mel": 8, "nv": 8}
    assert {r.source for r in manifest} == {"real"}
    assert len({r.lesion_id for r in manifest}) == 12
    assert Manifest.read(tmp_path / "out").records == manifest.records
    assert all((tmp_path / "out" / r.image).is_file() for r in manifest)
    saved = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert saved["accepted"] == 24 and saved["split_seed"] == 1


def test_bad_files_are_reported_and_the_import_goes_on(tmp_path: Path) -> None:
    src = ham_fixture(tmp_path / "src")
    rows = []
    for i, (name, (data, _)) in enumerate(sorted(BAD_FILES.items())):
        stem = f"ISIC_bad{i}"
        write(src / "HAM10000_images_part_1" / f"{stem}{Path(name).suffix}", data)
        rows.append(f"HAM_bad{i},{stem},nv,histo,50.0,male,back")
    write(src / "HAM10000_images_part_1" / "ISIC_unlabelled.jpg", jpeg())
    rows.append("HAM_x,ISIC_missing,nv,histo,50.0,male,back")
    rows.append("HAM_y,ISIC_0000000X,unk!,histo,50.0,male,back")
    write(src / "HAM10000_images_part_1" / "ISIC_0000000X.jpg", jpeg())
    with (src / "HAM10000_metadata.csv").open("a") as handle:
        handle.write("\n".join(rows) + "\n")

    manifest, report = import_dataset(src, tmp_path / "out")
    assert report.accepted == 24 == len(manifest)
    assert report.files_seen == report.accepted + report.rejected == 24 + len(BAD_FILES) + 2
    by_file = {Path(r.file).stem: r.reason.value for r in report.rejections}
    for i, (_, (_, reason)) in enumerate(sorted(BAD_FILES.items())):
        assert by_file[f"ISIC_bad{i}"] == reason
    assert by_file["ISIC_unlabelled"] == "no_label"
    assert by_file["ISIC_0000000X"] == "unknown_label"
    assert report.missing_files == ["ISIC_missing"]
    assert sum(report.rejected_by_reason.values()) == report.rejected


def test_isic_2019_csv_maps_codes_and_uses_lesion_ids(tmp_path: Path) -> None:
    src = tmp_path / "isic"
    header = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
    rows = [
        header,
        "ISIC_1,1,0,0,0,0,0,0,0,0",
        "ISIC_2,0,0,0,1,0,0,0,0,0",
        "ISIC_3,0,0,0,0,0,0,0,1,0",
        "ISIC_4,0,0,0,0,0,0,0,0,1",
        "ISIC_5,0,1,0,0,0,0,0,0,0",
    ]
    (src / "train").mkdir(parents=True)
    (src / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    (src / "ISIC_2019_Training_Metadata.csv").write_text(
        "image,age_approx,anatom_site_general,lesion_id,sex\nISIC_1,50,back,L1,male\nISIC_5,50,back,L1,male\n"
    )
    for i in range(1, 6):
        write(src / "train" / f"ISIC_{i}.jpg", jpeg())
    assert detect_format(src) == "isic-csv"
    manifest, report = import_dataset(src, tmp_path / "out")
    labels = {Path(r.image).stem: r.label for r in manifest}
    assert labels == {"ISIC_1": "mel", "ISIC_2": "akiec", "ISIC_3": "akiec", "ISIC_5": "nv"}
    assert [r.reason.value for r in report.rejections] == ["unknown_label"]  # UNK
    lesion = {Path(r.image).stem: r.lesion_id for r in manifest}
    assert lesion["ISIC_1"] == lesion["ISIC_5"] == "L1" and lesion["ISIC_2"] == "ISIC_2"


def test_isic_without_lesion_ids_warns(tmp_path: Path) -> None:
    src = tmp_path / "isic"
    (src / "imgs").mkdir(parents=True)
    (src / "gt.csv").write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,0,1,0,0,0,0,0\n")
    write(src / "imgs" / "ISIC_1.jpg", jpeg())
    _, report = import_dataset(src, tmp_path / "out", "isic-csv")
    assert report.accepted == 1
    assert "own lesion" in report.warnings[0]


def test_imagefolder_with_stray_files(tmp_path: Path) -> None:
    src = tmp_path / "folders"
    for label in ("nv", "Mel"):
        for i in range(3):
            write(src / label / f"img{i}.jpg", jpeg(exif=True))
    write(src / "readme.jpg", jpeg())
    manifest, report = import_dataset(src, tmp_path / "out")
    assert report.format == "imagefolder"
    assert manifest.class_counts() == {"mel": 3, "nv": 3}
    assert [r.reason.value for r in report.rejections] == ["outside_class_folder"]
    stored = (tmp_path / "out" / manifest.records[0].image).read_bytes()
    assert b"Exif" not in stored and b"J. Doe" not in stored


def test_manifest_reimport_keeps_splits_and_sources(demo_dataset: Manifest, tmp_path: Path) -> None:
    manifest, report = import_dataset(demo_dataset.root, tmp_path / "copy")
    assert report.format == "manifest"
    assert [(r.label, r.split, r.source, r.lesion_id) for r in manifest] == [
        (r.label, r.split, r.source, r.lesion_id) for r in demo_dataset
    ]


def test_refuses_to_overwrite_and_unknown_layouts(demo_dataset: Manifest, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        import_dataset(demo_dataset.root, demo_dataset.root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no supported layout"):
        import_dataset(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FormatError, match="not supported"):
        import_dataset(demo_dataset.root, tmp_path / "out2", "coco")
