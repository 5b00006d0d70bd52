from __future__ import annotations

import io

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dermasynth.data.images import decode_checked, inspect_image, load_rgb, strip_metadata
from tests.data.samples import BAD_FILES, jpeg, png


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_rejected_with_their_reason(name: str) -> None:
    data, reason = BAD_FILES[name]
    check = inspect_image(data, max_pixels=50_000_000)
    assert not check.ok
    assert check.reason == reason
    assert check.detail


@pytest.mark.parametrize("data", [jpeg(), png("RGB"), png("RGBA"), png("P")])
def test_colour_images_are_accepted(data: bytes) -> None:
    check = inspect_image(data, max_pixels=50_000_000)
    assert check.ok, check.detail
    assert (check.width, check.height) == (40, 30)


def test_pixel_limit_is_checked_before_decoding() -> None:
    check = inspect_image(jpeg(size=(100, 100)), max_pixels=9_999)
    assert check.reason == "too_large"
    assert "100x100" in check.detail


def test_strip_metadata_removes_exif_and_comments_losslessly() -> None:
    original = jpeg(exif=True)
    with Image.open(io.BytesIO(original)) as img:
        assert img.getexif()  # the fixture really carries EXIF
        before = img.convert("RGB").tobytes()
    stripped, suffix = strip_metadata(original)
    assert suffix == ".jpg"
    assert b"Exif" not in stripped and b"J. Doe" not in stripped and b"CameraMaker" not in stripped
    with Image.open(io.BytesIO(stripped)) as img:
        assert not img.getexif()
        assert img.convert("RGB").tobytes() == before  # same pixels: nothing was re-encoded


def test_strip_metadata_reencodes_other_formats_as_png() -> None:
    img = Image.new("RGB", (20, 10), (1, 2, 3))
    buffer = io.BytesIO()
    info = PngInfo()
    info.add_text("Author", "someone")
    img.save(buffer, format="PNG", pnginfo=info)
    stripped, suffix = strip_metadata(buffer.getvalue())
    assert suffix == ".png"
    assert b"someone" not in stripped
    assert load_rgb(stripped).tobytes() == img.tobytes()


@pytest.mark.parametrize("data", [jpeg(), png("RGB"), png("RGBA"), png("P")])
def test_decode_checked_returns_what_load_rgb_reads(data: bytes) -> None:
    check, image = decode_checked(data, max_pixels=50_000_000)
    assert check == inspect_image(data, max_pixels=50_000_000)
    assert image is not None and image.mode == "RGB"
    assert image.tobytes() == load_rgb(data).tobytes()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_decode_checked_gives_no_image_for_bad_files(name: str) -> None:
    data, reason = BAD_FILES[name]
    check, image = decode_checked(data, max_pixels=50_000_000)
    assert check.reason == reason and image is None
