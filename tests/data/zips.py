"""Zip archives built by the tests: a good dataset zip and the corpus of bad uploads the platform must refuse."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from tests.data.samples import BAD_FILES, jpeg


def zip_folder(folder: Path, *, wrap: str | None = None) -> bytes:
    """Zip every file below ``folder`` (inside a top folder ``wrap`` if given)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                archive.write(path, f"{wrap}/{name}" if wrap else name)
    return buffer.getvalue()


def zip_members(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def imagefolder_zip(n_per_class: int = 3, classes: tuple[str, ...] = ("mel", "nv"), *, exif: bool = False) -> bytes:
    return zip_members(
        {
            f"{label}/{label}_{i}.jpg": jpeg((40 * i + 20, 90, 60 + 10 * i), exif=exif)
            for label in classes
            for i in range(n_per_class)
        }
    )


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("nv/link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def encrypted_flag_zip() -> bytes:
    """A member flagged as encrypted (bit 0 of the general-purpose flags, in both of its headers)."""
    data = bytearray(zip_members({"nv/a.jpg": jpeg()}, zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.find(signature) + offset] |= 0x1
    return bytes(data)


def ratio_bomb_zip(mib: int = 64) -> bytes:
    """One member of ``mib`` MiB of zeros: a compression ratio near 1000."""
    return zip_members({"nv/zeros.jpg": b"\x00" * (mib << 20)})


def lying_bomb_zip() -> bytes:
    """A member whose headers claim 1 KiB while its data inflates to 2 MiB: zipfile stops at the claimed
    size, so the member fails its CRC check instead of filling the disk."""
    data = bytearray(zip_members({"nv/a.jpg": b"\x00" * (2 << 20)}))
    real = (2 << 20).to_bytes(4, "little")
    claimed = (1024).to_bytes(4, "little")
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed-size fields
        at = data.find(signature)
        assert data[at + offset : at + offset + 4] == real
        data[at + offset : at + offset + 4] = claimed
    return bytes(data)


def undecodable_zip() -> bytes:
    """Files in an ImageFolder layout, none of which decodes as an accepted image."""
    return zip_members({f"nv/{name}": data for name, (data, _) in BAD_FILES.items()})


BAD_UPLOADS: dict[str, tuple[bytes, str]] = {
    "not-a-zip": (b"just some text, certainly not a zip archive\n" * 20, "not_a_zip"),
    "a-jpeg": (jpeg(), "not_a_zip"),
    "truncated-zip": (imagefolder_zip()[:200], "not_a_zip"),
    "dotdot": (zip_members({"../../evil/nv/a.jpg": jpeg()}), "unsafe_path"),
    "absolute": (zip_members({"/tmp/nv/a.jpg": jpeg()}), "unsafe_path"),
    "drive-letter": (zip_members({"C:/nv/a.jpg": jpeg()}), "unsafe_path"),
    "backslash": (zip_members({"nv\\..\\..\\a.jpg": jpeg()}), "unsafe_path"),
    "symlink": (symlink_zip(), "unsafe_path"),
    "encrypted": (encrypted_flag_zip(), "encrypted"),
    "ratio-bomb": (ratio_bomb_zip(), "zip_bomb"),
    "lying-bomb": (lying_bomb_zip(), "corrupt_member"),
    "empty-zip": (zip_members({}), "empty_archive"),
    "manifest-escape": (
        zip_members(
            {
                "manifest.csv": b"image,label,lesion_id,split,source,sha256\n/etc/x.png,nv,l1,"
                b"train,real," + b"0" * 64 + b"\n"
            }
        ),
        "unsafe_path",
    ),
}

JOB_REFUSALS = frozenset({"lying-bomb", "manifest-escape"})
"""Bad uploads whose fault shows only when the zip is extracted: the gateway accepts them (its checks read
the directory only) and their ingest job fails; the gateway refuses the others at once."""
