"""What the clinician page does with photos and answers, without Streamlit: prepare, send in chunks, summarize.

* Each photo is decoded (HEIC/HEIF too), turned upright from its EXIF orientation and re-encoded without
  its metadata (GPS, camera, dates) before it leaves the web app; a file that cannot be decoded is sent as
  it is, so that the gateway's answer says why it cannot be used, like for any other client.
* Any number of photos: they go in chunks the gateway accepts; results are matched to the photos by upload
  position (two phones' ``IMG_0001.jpg`` stay apart), never by file name.
* The summary table, its CSV and a printable page, in plain language, with no internal scores.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from dermasynth.gateway_client import GatewayClient, GatewayError, ImageFile
from dermasynth.serving.schemas import DISCLAIMER, ImageError, ImagePrediction, PredictionResponse

pillow_heif.register_heif_opener()

ACCEPTED_TYPES = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "heic", "heif"]
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF"})
THUMBNAIL_SIDE = 384
UNSURE = "Unsure: see a dermatologist"
NOT_USABLE = "Not usable"


@dataclass(frozen=True)
class PreparedImage:
    """A photo ready to send (upright, metadata stripped) and a small upright thumbnail to show."""

    position: int
    name: str
    upload: ImageFile
    thumbnail: bytes | None


@dataclass(frozen=True)
class Outcome:
    """The answer for the photo at ``position`` (1-based, upload order)."""

    position: int
    name: str
    thumbnail: bytes | None
    result: ImagePrediction | ImageError


def prepare(position: int, name: str, raw: bytes) -> PreparedImage:
    """Decode ``raw``, apply its EXIF orientation, and re-encode it without metadata."""
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            source_format = opened.format or ""
            upright = ImageOps.exif_transpose(opened).convert("RGB")  # orientation first, then drop the EXIF
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return PreparedImage(position, name, ImageFile(name, raw), None)
    encoded = io.BytesIO()
    if source_format in LOSSLESS_FORMATS:
        upright.save(encoded, "PNG")
        upload = ImageFile(_renamed(name, ".png"), encoded.getvalue(), "image/png")
    else:  # photos (JPEG, HEIC, WebP): JPEG at high quality, without EXIF, ICC or XMP
        upright.save(encoded, "JPEG", quality=95)
        upload = ImageFile(_renamed(name, ".jpg"), encoded.getvalue(), "image/jpeg")
    upright.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    thumbnail = io.BytesIO()
    upright.save(thumbnail, "PNG")
    return PreparedImage(position, name, upload, thumbnail.getvalue())


def _renamed(name: str, suffix: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{stem}{suffix}"


def predict_all(
    client: GatewayClient,
    images: Sequence[PreparedImage],
    *,
    chunk: int,
    top_k: int = 3,
    explain: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Answers for every image, asked ``chunk`` at a time (fewer if the gateway says that is too many).

    Raises:
        GatewayError: a chunk was refused for another reason than its size, or the gateway is unreachable.
    """
    outcomes: list[Outcome] = []
    start, size = 0, max(1, chunk)
    while start < len(images):
        batch = images[start : start + size]
        try:
            response = client.predict([image.upload for image in batch], top_k=top_k, explain=explain)
        except GatewayError as exc:
            if exc.reason == "too_many_images" and size > 1:
                size = max(1, size // 2)
                continue
            raise
        outcomes.extend(_matched(batch, response))
        start += len(batch)
        if on_progress is not None:
            on_progress(start, len(images))
    return outcomes


def _matched(batch: Sequence[PreparedImage], response: PredictionResponse) -> list[Outcome]:
    if len(response.results) != len(batch):
        raise GatewayError(
            502, "bad_answer", f"the gateway answered {len(response.results)} results for {len(batch)} images"
        )
    return [
        Outcome(image.position, image.name, image.thumbnail, result)
        for image, result in zip(batch, response.results, strict=True)
    ]


MALIGNANT_NAMES = "melanoma, basal cell carcinoma or actinic keratosis"


def reason_text(result: ImagePrediction) -> str:
    """Why the model abstained, in plain words, each reason said once."""
    reasons = list(
        dict.fromkeys([*result.abstain_reasons, *([result.abstain_reason] if result.abstain_reason else [])])
    )
    said = []
    for reason in reasons:
        if reason == "out_of_distribution":
            said.append(
                "This photo does not look like the dermoscopic images the model learned from "
                "(it may be blurred, too dark, not a close-up of the lesion, or not skin)."
            )
        elif reason == "malignant_not_ruled_out":
            said.append(f"A malignant lesion ({MALIGNANT_NAMES}) cannot be ruled out.")
        elif reason == "set_too_large":  # the set itself is listed once, on the card
            said.append(f"{len(result.prediction_set) or 'Too many'} kinds of lesion remain possible.")
        elif reason == "low_confidence" and len(result.top_k) >= 2:
            first, second = result.top_k[0], result.top_k[1]
            said.append(f"The model cannot tell {first.name} from {second.name} with enough confidence.")
    return " ".join(said) or "The model is not confident enough about this photo."


def prediction_set(result: ImagePrediction) -> list[str]:
    """The readable names of the classes in the serving layer's prediction set (most likely first)."""
    return [member.name for member in result.prediction_set]


def decided(result: ImagePrediction) -> str:
    """The class the serving layer decided on (its decision rule), readable: ``Melanoma (mel)``."""
    return (
        f"{result.label_name} ({result.label})" if result.label else f"{result.top_k[0].name} ({result.top_k[0].label})"
    )


def summary_rows(outcomes: Sequence[Outcome]) -> list[dict[str, str | int]]:
    """One row per photo, in upload order: what the clinician reads first."""
    rows: list[dict[str, str | int]] = []
    for outcome in outcomes:
        result = outcome.result
        if isinstance(result, ImageError):
            rows.append(
                {"#": outcome.position, "file": outcome.name, "answer": NOT_USABLE, "top class": "", "probability": ""}
            )
            continue
        top = result.top_k[0]
        rows.append(
            {
                "#": outcome.position,
                "file": outcome.name,
                "answer": UNSURE if result.abstain else decided(result),
                "top class": f"{top.name} ({top.label})",
                "probability": f"{top.probability:.0%}",
            }
        )
    return rows


def summary_csv(rows: Sequence[dict[str, str | int]]) -> bytes:
    """The summary table as CSV (UTF-8, a header row), with the disclaimer as the last line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["#", "file", "answer", "top class", "probability"])
    writer.writeheader()
    writer.writerows(rows)
    writer.writerow({"#": "", "file": DISCLAIMER})
    return out.getvalue().encode("utf-8")


def printable_summary(rows: Sequence[dict[str, str | int]], patient: str, model: str) -> str:
    """A self-contained HTML page for one patient, to print or file."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = "".join(f"<th>{html.escape(name)}</th>" for name in ["#", "file", "answer", "top class", "probability"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[name]))}</td>" for name in row) + "</tr>" for row in rows
    )
    title = f"DermaSynth summary{': ' + html.escape(patient) if patient else ''}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left}.note{color:#a00}</style></head><body>"
        f"<h1>{title}</h1><p>{html.escape(when)}; model {html.escape(model)}</p>"
        f"<table><tr>{header}</tr>{body}</table><p class='note'>{html.escape(DISCLAIMER)}</p></body></html>"
    )
