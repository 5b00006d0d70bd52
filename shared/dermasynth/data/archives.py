"""Unpacking uploaded zip archives safely: zip-slip, zip-bomb and resource limits.

Every check that can be made from the archive's directory is made before a byte is written: member
count, unsafe paths (absolute, ``..``, drive letters, links), encryption, duplicate names, declared
total size and per-member compression ratio. While extracting, the bytes actually produced are
counted too, so an archive that lies in its directory is stopped as soon as it does.
"""

from __future__ import annotations

import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from dermasynth.labels import HAM10000_CLASSES

_CHUNK = 1 << 20
_RATIO_FLOOR = 1 << 20  # small members (a CSV of zeros) may compress well; the ratio check starts above 1 MiB
_IGNORED_PARTS = frozenset({"__MACOSX"})  # resource forks macOS adds to zips; never data
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LENGTHS = struct.Struct("<3H")
_CENTRAL_HEADER = 46  # fixed part of a central-directory entry; name, extra and comment lengths at 28, 30, 32
_MAX_COMMENT = 0xFFFF


class ArchiveRejected(ValueError):
    """An upload that is refused as a whole; ``reason`` is a short code, the message says what and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold."""

    max_files: int
    max_expanded_bytes: int
    max_ratio: int


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if "\x00" in name or "\\" in name:
        raise ArchiveRejected(
            "unsafe_path", f"member {name!r}: backslashes and NUL characters are not accepted in archive paths; use '/'"
        )
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
        raise ArchiveRejected(
            "unsafe_path",
            f"member {name!r} points outside the archive (absolute path, drive "
            "letter or '..'); paths must be relative and stay inside it",
        )
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveRejected("unsafe_path", f"member {name!r} is a symbolic link; links are not accepted")
    return path


def _too_many(count: int | str, limits: ArchiveLimits) -> ArchiveRejected:
    return ArchiveRejected(
        "too_many_files",
        f"the archive's directory holds {count} entries (files, folders and __MACOSX entries all count), "
        f"more than the {limits.max_files} accepted (DERMASYNTH_MAX_UPLOAD_FILES)",
    )


def _central_directory(handle: IO[bytes]) -> tuple[int, int, int] | None:
    """(declared entries, start, size) of the zip's central directory from its end records; None if absent."""
    handle.seek(0, 2)
    file_size = handle.tell()
    tail_start = max(0, file_size - _EOCD.size - _MAX_COMMENT)
    handle.seek(tail_start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        return None
    _, _, _, _, entries, size, _, _ = _EOCD.unpack_from(tail, at)
    end_record = tail_start + at
    locator_at = at - _EOCD64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
        record_at = end_record - _EOCD64_LOCATOR.size - _EOCD64.size
        if record_at >= 0:
            handle.seek(record_at)
            record = handle.read(_EOCD64.size)
            if len(record) == _EOCD64.size and record[:4] == b"PK\x06\x06":
                fields = _EOCD64.unpack(record)
                entries, size, end_record = fields[7], fields[8], record_at
    return entries, max(0, end_record - size), size


class _Chunks:
    """Reads at most ``size`` bytes of ``handle`` through a small window (never the whole directory at once)."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self.handle = handle
        self.remaining = size
        self.window = b""
        self.at = 0  # read position inside the window

    def ensure(self, n: int) -> bool:
        if len(self.window) - self.at < n and self.remaining > 0:
            parts = [self.window[self.at :]]
            have = len(parts[0])
            while have < n and self.remaining > 0:
                chunk = self.handle.read(min(_CHUNK, self.remaining))
                self.remaining = self.remaining - len(chunk) if chunk else 0
                parts.append(chunk)
                have += len(chunk)
            self.window, self.at = b"".join(parts), 0
        return len(self.window) - self.at >= n

    def skip(self, n: int) -> bool:
        if not self.ensure(n):
            return False
        self.at += n
        return True


def count_entries(source: Path | IO[bytes], limits: ArchiveLimits) -> int:
    """Count the zip's central-directory entries (every one: files, folders, ``__MACOSX``) by streaming the
    directory, before any of it is parsed into objects, and stop as soon as the limit is passed.

    The declared count in the end record is checked first (one read), then the entries really present are
    counted, so an archive whose end record understates its entries is caught as well.

    Returns:
        The entries counted (0 when no end record was found: the zip reader then says what is wrong).

    Raises:
        ArchiveRejected: more entries than ``limits.max_files``.
    """
    if isinstance(source, Path):
        with source.open("rb") as handle:
            return count_entries(handle, limits)
    position = source.tell()
    try:
        found = _central_directory(source)
        if found is None:
            return 0
        declared, start, size = found
        if declared > limits.max_files:
            raise _too_many(declared, limits)
        source.seek(start)
        reader = _Chunks(source, size)
        counted = 0
        while reader.ensure(_CENTRAL_HEADER) and reader.window.startswith(b"PK\x01\x02", reader.at):
            name, extra, comment = _LENGTHS.unpack_from(reader.window, reader.at + 28)
            if not reader.skip(_CENTRAL_HEADER + name + extra + comment):
                break  # a truncated entry: the zip reader reports the damage
            counted += 1
            if counted > limits.max_files:
                raise _too_many(f"more than {limits.max_files}", limits)
        return counted
    finally:
        source.seek(position)


def check_archive(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check an archive's directory against ``limits`` and return its file members with their safe paths.

    Raises:
        ArchiveRejected: naming the first member or limit that is broken.
    """
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[str] = set()
    declared = 0
    entries = archive.infolist()
    if len(entries) > limits.max_files:
        raise _too_many(len(entries), limits)
    for info in entries:
        path = _member_path(info)
        if info.is_dir() or not path.parts or _IGNORED_PARTS & set(path.parts):
            continue
        if info.flag_bits & 0x1:
            raise ArchiveRejected("encrypted", f"member {info.filename!r} is encrypted; upload an unencrypted zip")
        if path.as_posix().lower() in seen:
            raise ArchiveRejected("duplicate_member", f"member {info.filename!r} appears twice in the archive")
        seen.add(path.as_posix().lower())
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveRejected(
                "zip_bomb",
                f"member {info.filename!r} expands {info.compress_size} bytes to "
                f"{info.file_size} (ratio above {limits.max_ratio}): refused as a zip bomb",
            )
        declared += info.file_size
        members.append((info, path))
    if declared > limits.max_expanded_bytes:
        raise ArchiveRejected(
            "zip_bomb",
            f"the archive expands to {declared} bytes, more than the "
            f"{limits.max_expanded_bytes} accepted (DERMASYNTH_MAX_UPLOAD_EXPANDED_BYTES)",
        )
    if not members:
        raise ArchiveRejected("empty_archive", "the archive holds no files")
    return members


def _open(source: Path | IO[bytes], limits: ArchiveLimits) -> zipfile.ZipFile:
    try:
        count_entries(source, limits)  # before the zip reader builds an object per directory entry
        return zipfile.ZipFile(source)
    except ArchiveRejected:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveRejected(
            "not_a_zip", f"the upload is not a readable zip archive ({exc}); upload a .zip of the dataset folder"
        ) from exc


def inspect_archive(source: Path | IO[bytes], limits: ArchiveLimits) -> int:
    """The checks that need only the zip's directory (:func:`count_entries`, then :func:`check_archive`),
    without extracting anything: what the gateway refuses at once before it queues an ingest job.

    Returns:
        The number of file members.

    Raises:
        ArchiveRejected: not a readable zip, too many entries, unsafe paths, encryption, a declared zip bomb.
    """
    position = None if isinstance(source, Path) else source.tell()
    try:
        with _open(source, limits) as archive:
            return len(check_archive(archive, limits))
    finally:
        if position is not None and not isinstance(source, Path):
            source.seek(position)


def extract_archive(source: Path | IO[bytes], dest: Path, limits: ArchiveLimits) -> Path:
    """Unpack the zip ``source`` (a path or a seekable binary file) into ``dest`` after :func:`count_entries`
    and :func:`check_archive`, counting the bytes written.

    Returns:
        The dataset root: ``dest``, or its only top-level folder when the archive wraps everything in one.

    Raises:
        ArchiveRejected: if the file is not a readable zip, breaks a limit, or a member expands beyond
            its declared size.
    """
    archive = _open(source, limits)
    with archive:
        members = check_archive(archive, limits)
        written = 0
        for info, path in members:
            target = dest.joinpath(*path.parts)
            if not target.resolve().is_relative_to(dest.resolve()):
                raise ArchiveRejected("unsafe_path", f"member {info.filename!r} points outside the archive")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as out:
                    member_bytes = 0
                    while chunk := src.read(_CHUNK):
                        member_bytes += len(chunk)
                        written += len(chunk)
                        if member_bytes > info.file_size or written > limits.max_expanded_bytes:
                            raise ArchiveRejected(
                                "zip_bomb",
                                f"member {info.filename!r} expands beyond its "
                                "declared size or the upload limit: refused as a zip bomb",
                            )
                        out.write(chunk)
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                NotImplementedError,
                EOFError,
                OSError,
                ValueError,
            ) as exc:
                if isinstance(exc, ArchiveRejected):
                    raise
                raise ArchiveRejected("corrupt_member", f"member {info.filename!r} cannot be extracted: {exc}") from exc
    return _dataset_root(dest)


def _dataset_root(dest: Path) -> Path:
    """Step into a lone top-level folder (a zipped dataset folder), unless it is a class folder itself."""
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() not in HAM10000_CLASSES:
        return entries[0]
    return dest


def write_archive(folder: Path, target: Path | IO[bytes]) -> None:
    """Zip every file below ``folder`` (paths relative to it) into ``target``: what an upload sends."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
