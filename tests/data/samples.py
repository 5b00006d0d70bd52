"""Small image files built by the tests: good ones, and the corpus of bad ones an import must survive."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from PIL import Image


def jpeg(
    colour: tuple[int, int, int] = (180, 120, 90), size: tuple[int, int] = (40, 30), *, exif: bool = False
) -> bytes:
    img = Image.new("RGB", size, colour)
    buffer = io.BytesIO()
    if exif:
        data = Image.Exif()
        data[0x010F] = "CameraMaker"  # Make
        data[0x8825] = {2: (52.0, 31.0, 0.0)}  # GPS latitude
        img.save(buffer, format="JPEG", exif=data.tobytes(), comment=b"patient: J. Doe")
    else:
        img.save(buffer, format="JPEG")
    return buffer.getvalue()


def png(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A small PNG file whose header claims side x side pixels (a decompression bomb)."""
    raw = zlib.compress(b"\x00" * (side + 1) * 2, 9)  # two all-zero 1-bit rows are enough to be a PNG

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "empty.jpg": (b"", "empty"),
    "notes.jpg": (b"this is a text file, not an image\n" * 10, "not_an_image"),
    "truncated.jpg": (jpeg(size=(200, 150))[:400], "truncated"),
    "gray.png": (png("L"), "grayscale"),
    "cmyk.jpg": (cmyk_jpeg(), "cmyk"),
    "bomb.png": (bomb_png(), "too_large"),
    "tiny.png": (png("RGB", (4, 4)), "too_small"),
}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
