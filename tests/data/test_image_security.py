"""Issue 12, findings 5 and 6: only five image formats are decoded; metadata is really removed."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dermasynth.data.images import decode_checked, inspect_image, load_rgb, strip_metadata
from tests.data.samples import jpeg

MAX_PIXELS = 50_000_000


def _saved(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 60, 30)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _eps() -> bytes:
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n"
        b"/Times-Roman findfont 12 scalefont setfont 0 0 moveto (x) show showpage\n%%EOF\n"
    )


REFUSED = {
    "GIF": lambda: _saved("GIF"),
    "TGA": lambda: _saved("TGA"),
    "PCX": lambda: _saved("PCX"),
    "ICNS": lambda: _saved("ICNS"),
    "SGI": lambda: _saved("SGI"),
    "DDS": lambda: _saved("DDS"),
    "IM": lambda: _saved("IM"),
    "QOI": lambda: _saved("QOI"),
    "JPEG 2000": lambda: _saved("JPEG2000"),
    "EPS": _eps,
    "PPM": lambda: _saved("PPM"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_formats_other_than_the_five_are_refused_naming_the_format(name: str) -> None:
    data = REFUSED[name]()
    check, image = decode_checked(data, MAX_PIXELS)
    assert image is None
    assert check.reason == "unsupported_format", check
    assert name in check.detail and "JPEG, PNG, BMP, TIFF or WebP" in check.detail
    with pytest.raises(Image.UnidentifiedImageError):
        load_rgb(data)  # no other decoder is ever reached, not even by the plain loader


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
def test_the_five_formats_are_accepted(fmt: str) -> None:
    assert inspect_image(_saved(fmt), MAX_PIXELS).ok


def _exif(text: str) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = text  # Make
    exif[0x013B] = "Patient J. Doe"  # Artist
    return exif.tobytes()


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _insert_after_soi(data: bytes, *segments: bytes) -> bytes:
    return data[:2] + b"".join(segments) + data[2:]


def _pixels(data: bytes) -> bytes:
    return load_rgb(data).tobytes()


def test_mpo_keeps_only_the_first_picture_without_any_exif() -> None:
    first = Image.new("RGB", (40, 30), (200, 10, 10))
    second = Image.new("RGB", (40, 30), (10, 200, 10))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second], exif=_exif("SecondFrameCam"))
    mpo = buffer.getvalue()
    assert mpo.count(b"\xff\xd8\xff") == 2 and mpo.count(b"SecondFrameCam") == 2  # two pictures, each with EXIF
    stripped, suffix = strip_metadata(mpo)
    assert suffix == ".jpg"
    assert b"SecondFrameCam" not in stripped and b"Exif" not in stripped and b"MPF" not in stripped
    assert stripped.count(b"\xff\xd8") == 1 and stripped.endswith(b"\xff\xd9")
    assert _pixels(stripped) == _pixels(mpo)  # the first picture, losslessly


def test_adobe_app14_keeps_only_its_colour_transform() -> None:
    adobe = b"Adobe" + b"\x00\x64" + b"\x80\x00" + b"\x00\x00" + b"\x01" + b"Patient J. Doe, DOB 1950-01-01"
    disguised = _segment(0xE1, b"Adobe hidden note: J. Doe")  # an APP1 whose payload starts with "Adobe"
    original = _insert_after_soi(jpeg(), _segment(0xEE, adobe), disguised)
    stripped, _ = strip_metadata(original)
    assert b"J. Doe" not in stripped
    assert _segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01") in stripped  # version and transform only
    assert _pixels(stripped) == _pixels(original)


def test_bytes_after_the_end_of_image_marker_are_dropped() -> None:
    original = jpeg() + b"trailer: Patient J. Doe" + jpeg(colour=(1, 2, 3))
    stripped, _ = strip_metadata(original)
    assert b"J. Doe" not in stripped and stripped.count(b"\xff\xd8") == 1
    assert _pixels(stripped) == _pixels(original)


def test_xmp_photoshop_jfif_thumbnails_and_comments_are_dropped_but_the_icc_profile_kept() -> None:
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><dc:creator>J. Doe</dc:creator></x:xmpmeta>"
    photoshop = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0cJ. Doe caption"
    icc = b"ICC_PROFILE\x00\x01\x01" + b"\x00" * 64
    original = _insert_after_soi(
        jpeg(exif=True), _segment(0xE1, xmp), _segment(0xED, photoshop), _segment(0xE2, icc), _segment(0xFE, b"J. Doe")
    )
    stripped, _ = strip_metadata(original)
    for secret in (b"J. Doe", b"xmpmeta", b"Photoshop", b"Exif", b"CameraMaker", b"JFIF"):
        assert secret not in stripped, secret
    assert _segment(0xE2, icc) in stripped
    assert _pixels(stripped) == _pixels(original)


def test_progressive_jpeg_scans_survive_stripping() -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(buffer, format="JPEG", progressive=True, exif=_exif("Cam"))
    stripped, _ = strip_metadata(buffer.getvalue() + b"junk")
    assert b"Cam" not in stripped
    assert _pixels(stripped) == _pixels(buffer.getvalue())
