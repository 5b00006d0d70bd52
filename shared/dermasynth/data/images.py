"""Reading images safely: full decode checks, RGB loading, and metadata stripping.

Every image that enters DermaSynth, by import, upload or prediction request, passes
:func:`inspect_image`: it is decoded completely, so truncated files are caught, and its pixel count is
checked from the header before decoding, so a decompression bomb is refused without being expanded.
Only the decoders of :data:`ACCEPTED_FORMATS` are ever run (``Image.open(..., formats=...)``): the
dozens of other formats Pillow knows (EPS, which starts Ghostscript, GIF, JPEG 2000, ICNS, TGA ...)
are refused by name, from their signature, without being parsed.
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
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
"""The only Pillow decoders DermaSynth runs (a multi-picture JPEG, MPO, opens through the JPEG one)."""

# Signatures of formats Pillow (or a browser) could decode that are refused: named in the rejection.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000"),
    (b"\xffO\xffQ", 0, "JPEG 2000"),
    (b"icns", 0, "ICNS"),
    (b"%!PS", 0, "EPS"),
    (b"\xc5\xd0\xd3\xc6", 0, "EPS"),
    (b"qoif", 0, "QOI"),
    (b"DDS ", 0, "DDS"),
    (b"\x01\xda", 0, "SGI"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"Image type:", 0, "IM"),
    (b"ftypheic", 4, "HEIF"),
    (b"ftypheix", 4, "HEIF"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"%PDF", 0, "PDF"),
    (b"<svg", 0, "SVG"),
    (b"\x59\xa6\x6a\x95", 0, "Sun raster"),
    (b"FORM", 0, "IFF/ILBM"),
    (b"P1", 0, "PPM/PBM"),
    (b"P2", 0, "PPM/PGM"),
    (b"P3", 0, "PPM"),
    (b"P4", 0, "PPM/PBM"),
    (b"P5", 0, "PPM/PGM"),
    (b"P6", 0, "PPM"),
)


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
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
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
        refused = sniff_refused_format(data)
        if refused is not None:
            return ImageCheck(
                RejectReason.UNSUPPORTED_FORMAT,
                f"{refused} images are not accepted; accepted: {ACCEPTED_DESCRIPTION}",
                format=refused,
            ), None
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


def sniff_refused_format(data: bytes) -> str | None:
    """The name of a known but refused image format ``data`` starts like, from its signature (never parsed)."""
    for signature, offset, name in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    if len(data) >= 18 and data[1] in (0, 1) and data[2] in (1, 2, 3, 9, 10, 11) and data[16] in (8, 15, 16, 24, 32):
        return "TGA"  # TGA has no signature: its header's colour-map flag, image type and depth
    if data[:1] == b"\x0a" and data[1:2] in (b"\x00", b"\x02", b"\x03", b"\x04", b"\x05") and data[2:3] == b"\x01":
        return "PCX"
    return None


def load_rgb(source: bytes | Path) -> Image.Image:
    """Open an image (one of :data:`ACCEPTED_FORMATS`) as RGB (palette and alpha dropped) with its pixels loaded."""
    raw = source.read_bytes() if isinstance(source, Path) else source
    with Image.open(io.BytesIO(raw), formats=ACCEPTED_FORMATS) as img:
        return img.convert("RGB")


def strip_metadata(data: bytes) -> tuple[bytes, str]:
    """Return the image without metadata and its file suffix.

    JPEG is stripped losslessly: the file is cut at its first end-of-image marker (so the further
    pictures of an MPO, each with its own EXIF, and any trailing bytes are gone), and every APPn and
    COM segment is dropped except the colour profile (APP2 ``ICC_PROFILE``); an APP14 ``Adobe`` segment,
    which tells decoders the colour transform, is rewritten to its fixed 12 bytes (version, zeroed flags,
    transform) so that nothing else it carried survives. Every other format is re-encoded from its
    pixels as an RGB PNG, which is lossless for the colour channels and written without metadata.

    Raises:
        ValueError: a JPEG whose segments are malformed.
    """
    if data[:2] == b"\xff\xd8":
        return _strip_jpeg(data), ".jpg"
    buffer = io.BytesIO()
    load_rgb(data).save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


_ICC = b"ICC_PROFILE\x00"
_ADOBE = b"Adobe"
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 carry no length


def _kept_application_segment(marker: int, payload: bytes) -> bytes | None:
    """What of an APPn payload is kept: the ICC profile as it is, Adobe's colour transform alone, nothing else."""
    if marker == 0xE2 and payload.startswith(_ICC):
        return payload
    if marker == 0xEE and payload.startswith(_ADOBE) and len(payload) >= 12:
        return _ADOBE + payload[5:7] + b"\x00\x00\x00\x00" + payload[11:12]
    return None


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at ``pos`` ends: the next marker that is not a stuffed 0xFF or RSTn."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise ValueError("malformed JPEG: scan data without an end-of-image marker")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
        elif following == 0xFF:  # a fill byte before a marker
            pos += 1
        else:
            return pos


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(b"\xff\xd8")
    pos = 2
    end = len(data)
    while True:
        if pos >= end or data[pos] != 0xFF:
            raise ValueError("malformed JPEG: expected a marker before the end-of-image marker")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            raise ValueError("malformed JPEG: the file ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # the first end-of-image: whatever follows (further MPO frames, trailers) is dropped
            out += b"\xff\xd9"
            return bytes(out)
        if marker in _STANDALONE:
            out += bytes((0xFF, marker))
            continue
        if pos + 2 > end:
            raise ValueError("malformed JPEG: the file ends inside a segment header")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > end:
            raise ValueError(f"malformed JPEG: segment 0xFF{marker:02X} runs past the end of the file")
        payload = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xFE or 0xE0 <= marker <= 0xEF:  # COM and APP0-APP15
            kept = _kept_application_segment(marker, payload)
            if kept is not None:
                out += bytes((0xFF, marker)) + (len(kept) + 2).to_bytes(2, "big") + kept
            continue
        out += bytes((0xFF, marker)) + (length).to_bytes(2, "big") + payload
        if marker == 0xDA:  # start of scan: copy the entropy-coded data up to the next marker
            scan_end = _scan_end(data, pos)
            out += data[pos:scan_end]
            pos = scan_end
