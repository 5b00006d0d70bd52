"""Preparing photos (EXIF orientation, metadata, HEIC) and summarizing answers, without Streamlit."""

from __future__ import annotations

import csv
import io

import pillow_heif
import pytest
from PIL import Image

from dermasynth.data.images import RejectReason
from dermasynth.serving.schemas import DISCLAIMER, AbstainReasonName, ClassProbability, ImageError, ImagePrediction
from services.frontend.predictions import (
    UNSURE,
    Outcome,
    prepare,
    printable_summary,
    reason_text,
    summary_csv,
    summary_rows,
)

ORIENTATION = 0x0112
GPS_INFO = 0x8825


def _tall_then_rotated_jpeg() -> bytes:
    """A 60x20 (wide) JPEG whose EXIF says 'rotate 90° clockwise to view' (orientation 6), with a GPS tag."""
    image = Image.new("RGB", (60, 20), (200, 30, 30))
    image.paste((20, 20, 220), (0, 0, 10, 20))  # a blue band on the left edge
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "PhoneMaker"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def test_exif_orientation_is_applied_and_every_tag_is_stripped() -> None:
    prepared = prepare(1, "IMG_0001.jpg", _tall_then_rotated_jpeg())
    sent = Image.open(io.BytesIO(prepared.upload.data))
    assert sent.size == (20, 60)  # upright: the orientation was applied before the EXIF was dropped
    pixel = sent.getpixel((10, 2))
    assert isinstance(pixel, tuple) and pixel[2] > 150  # the left band is now at the top
    assert not sent.getexif()  # no orientation, maker or GPS tag leaves the web app
    assert "exif" not in sent.info and "icc_profile" not in sent.info
    assert prepared.upload.mime_type == "image/jpeg"
    assert Image.open(io.BytesIO(prepared.thumbnail or b"")).size == (20, 60)


def test_heic_photos_are_decoded_and_sent_as_jpeg() -> None:
    if not pillow_heif.libheif_info()["HEIF"]:
        pytest.skip("this libheif has no HEIC encoder to make a test photo")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 60)).save(buffer, "HEIF", quality=90)
    prepared = prepare(2, "phone.HEIC", buffer.getvalue())
    assert prepared.upload.name == "phone.jpg"
    assert Image.open(io.BytesIO(prepared.upload.data)).format == "JPEG"
    assert Image.open(io.BytesIO(prepared.upload.data)).size == (64, 48)


def test_lossless_images_stay_lossless_and_undecodable_files_go_as_they_are() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 30), (1, 2, 3)).save(buffer, "PNG")
    assert prepare(1, "a.png", buffer.getvalue()).upload.mime_type == "image/png"
    broken = prepare(2, "notes.jpg", b"hello")
    assert broken.upload.data == b"hello" and broken.thumbnail is None  # the gateway says why it is unusable


def _answer(label: str, name: str, p: float, *reasons: AbstainReasonName) -> ImagePrediction:
    top = [
        ClassProbability(label=label, name=name, probability=p),
        ClassProbability(label="nv", name="Nevus", probability=1 - p),
    ]
    return ImagePrediction(
        file="x.jpg",
        top_k=top,
        label=label,
        label_name=name,
        prediction_set=top if "set_too_large" in reasons else top[:1],
        model="classifier",
        model_version=3,
        abstain=bool(reasons),
        abstain_reason=reasons[0] if reasons else None,
        abstain_reasons=list(reasons),
        abstain_detail="the model is unsure (top probability 0.32 < 0.50)",
        ood_score=596.1,
    )


def test_summary_rows_csv_and_printable_page_say_it_plainly() -> None:
    outcomes = [
        Outcome(1, "IMG_0001.jpg", None, _answer("mel", "Melanoma", 0.82)),
        Outcome(2, "IMG_0001.jpg", None, _answer("bkl", "Benign keratosis", 0.51, "low_confidence")),
        Outcome(3, "doc.pdf", None, ImageError(file="doc.pdf", reason=RejectReason.NOT_AN_IMAGE, detail="x")),
    ]
    rows = summary_rows(outcomes)
    assert [row["answer"] for row in rows] == ["Melanoma (mel)", UNSURE, "Not usable"]
    assert [row["#"] for row in rows] == [1, 2, 3]
    assert rows[0]["probability"] == "82%"
    parsed = list(csv.DictReader(io.StringIO(summary_csv(rows).decode())))
    assert parsed[0] == {
        "#": "1",
        "file": "IMG_0001.jpg",
        "answer": "Melanoma (mel)",
        "top class": "Melanoma (mel)",
        "probability": "82%",
    }
    assert parsed[-1]["file"] == DISCLAIMER
    page = printable_summary(rows, "patient <42>", "classifier v3")
    assert "patient &lt;42&gt;" in page and DISCLAIMER in page and "596" not in page


def test_reasons_are_plain_and_never_show_internal_scores() -> None:
    unsure = reason_text(_answer("bkl", "Benign keratosis", 0.51, "low_confidence"))
    assert unsure == "The model cannot tell Benign keratosis from Nevus with enough confidence."
    odd = reason_text(_answer("bkl", "Benign keratosis", 0.9, "out_of_distribution"))
    assert "does not look like" in odd
    assert not any(ch.isdigit() for ch in unsure + odd)
    several = reason_text(
        _answer("mel", "Melanoma", 0.4, "malignant_not_ruled_out", "set_too_large", "malignant_not_ruled_out")
    )
    assert several == (
        "A malignant lesion (melanoma, basal cell carcinoma or actinic keratosis) cannot be ruled out. "
        "2 kinds of lesion remain possible."
    )  # each reason once, in plain words, never the gateway's detail with its numbers
