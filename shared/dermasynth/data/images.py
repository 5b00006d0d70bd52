"""Reading images safely: full decode checks, RGB loading, and metadata stripping.

Every image that enters DermaSynth, by import, upload or prediction request, passes
:func:`inspect_image`: it is decoded completely, so truncated files are caught, and its pixel count is
checked from the header before decoding, so a decompression bomb is refused without being expanded.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dermasynth.data.schemas import RejectReason

ACCEPTED_MODES = frozenset({"RGB", "RGBA", "P", "YCbCr"})
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F", "La"})
MIN_SIDE = 8


ACCEPTED_DESCRIPTION = (
    f"RGB images (JPEG, PNG, BMP, TIFF or WebP; palette and RGBA are converted) of at least "
    f"{MIN_SIDE}x{MIN_SIDE} pixels"
)


@dataclass(frozen=True)
class ImageCheck:
    """The outcome of inspecting one image: ``reason`` is None when it is accepted."""

    reason: RejectReason | None
    detail: str = ""
    width: int = 0
    height: int = 0
    format: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def inspect_image(data: bytes, max_pixels: int) -> ImageCheck:
    """Decode ``data`` completely and say whether DermaSynth accepts it.

    Args:
        data: the file's bytes.
        max_pixels: the largest width*height accepted (decompression-bomb guard).

    Returns:
        An :class:`ImageCheck`; its ``detail`` says what was wrong and what is accepted.
    """
    return _decode(data, max_pixels, rgb=False)[0]


def decode_checked(data: bytes, max_pixels: int) -> tuple[ImageCheck, Image.Image | None]:
    """:func:`inspect_image` that also returns the accepted image as RGB (as :func:`load_rgb` would), so a
    caller that needs the pixels decodes once. The image is None when the check fails."""
    return _decode(data, max_pixels, rgb=True)


def _decode(data: bytes, max_pixels: int, rgb: bool) -> tuple[ImageCheck, Image.Image | None]:
    if not data:
        return ImageCheck(RejectReason.EMPTY, "the file is empty (0 bytes)"), None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                fmt = img.format or ""
                if width * height > max_pixels:
                    return ImageCheck(
                        RejectReason.TOO_LARGE,
                        f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels",
                        width,
                        height,
                        fmt,
                    ), None
                mode = img.mode
                img.load()
                image = img.convert("RGB") if rgb and mode in ACCEPTED_MODES else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(RejectReason.TOO_LARGE, f"decompression-bomb guard: {exc}"), None
    except UnidentifiedImageError:
        return ImageCheck(RejectReason.NOT_AN_IMAGE, f"not a decodable image; accepted: {ACCEPTED_DESCRIPTION}"), None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        reason = RejectReason.TRUNCATED if "truncated" in str(exc).lower() else RejectReason.UNREADABLE
        return ImageCheck(reason, f"decoding failed: {exc}"), None
    if mode == "CMYK":
        return ImageCheck(
            RejectReason.CMYK, f"CMYK colour is not accepted; {ACCEPTED_DESCRIPTION}", width, height, fmt
        ), None
    if mode in GRAYSCALE_MODES:
        return ImageCheck(
            RejectReason.GRAYSCALE,
            f"grayscale mode {mode!r} is not accepted; {ACCEPTED_DESCRIPTION}",
            width,
            height,
            fmt,
        ), None
    if mode not in ACCEPTED_MODES:
        return ImageCheck(
            RejectReason.UNSUPPORTED_MODE,
            f"colour mode {mode!r} is not accepted; {ACCEPTED_DESCRIPTION}",
            width,
            height,
            fmt,
        ), None
    if min(width, height) < MIN_SIDE:
        return ImageCheck(
            RejectReason.TOO_SMALL, f"{width}x{height} is smaller than {MIN_SIDE}x{MIN_SIDE}", width, height, fmt
        ), None
    return ImageCheck(None, "", width, height, fmt), image


def load_rgb(source: bytes | Path) -> Image.Image:
    """Open an image as RGB (palette and alpha dropped) with its pixels loaded."""
    raw = source.read_bytes() if isinstance(source, Path) else source
    with Image.open(io.BytesIO(raw)) as img:
        return img.convert("RGB")


def strip_metadata(data: bytes) -> tuple[bytes, str]:
    """Return the image without metadata blocks (EXIF, XMP, ICC text, comments) and its file suffix.

    JPEG is stripped losslessly by dropping its APP1-APP15 and COM segments (APP14 "Adobe" is kept:
    it tells decoders the colour transform). Every other format is re-encoded as an RGB PNG, which is
    lossless for the colour channels and written without metadata.
    """
    if data[:2] == b"\xff\xd8":
        return _strip_jpeg(data), ".jpg"
    buffer = io.BytesIO()
    load_rgb(data).save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(data[:2])
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("malformed JPEG: expected a marker")
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the entropy-coded rest is copied as it is
            out += data[pos:]
            return bytes(out)
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos : pos + 2 + length]
        is_metadata = (0xE1 <= marker <= 0xEF and segment[4:9] != b"Adobe") or marker == 0xFE
        if not is_metadata:
            out += segment
        pos += 2 + length
    raise ValueError("malformed JPEG: no start-of-scan segment")
