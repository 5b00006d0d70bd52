"""Decode a dataset's images once per preprocessing into memory-mapped uint8 arrays, and reuse them.

A per-image PIL loader caps every budgeted figure of the platform (accuracy in a fixed time, GAN
steps, GPU cost). This module decodes every image of a manifest once, at one preprocessing geometry
(``image_size``, ``crop``), into two ``.npy`` files opened with :func:`numpy.lib.format.open_memmap`:

- ``eval.npy`` (N, S, S, 3): exactly what :meth:`Preprocessing.pixels_transform` gives (the eval,
  export and serving geometry; the GAN's real images too);
- ``train.npy`` (N, S, W, 3) with ``extents.npy`` (N, 2): the image resized so its shorter side is S,
  as the per-image train transform sees it before its random resized crop, left-aligned on a canvas
  ``W = ceil(S * 4/3)`` wide (HAM10000's aspect), the rest of the canvas repeating the edge pixels.
  ``extents`` holds each image's (height, width) on the canvas; a wider image is centre-cropped to the
  canvas, a portrait one to its central square (the random crops of training stay within the extent).

The folder ``{cache_root}/decoded/{key}/`` is named by a hash of the manifest's content (every row's
image path and sha256, in order) and the geometry, so a changed manifest or preprocessing makes a new
cache. ``meta.json``, written last, holds the key, the count, the shapes and a BLAKE2b checksum of each
file: a truncated or corrupt cache is detected when opened, logged, and rebuilt, never used. With an
object store, a built cache is uploaded under ``caches/decoded/{key}/`` and other workers fetch it
instead of decoding. Memory-mapped reads serve datasets larger than memory; a cache over the disk
budget is not built at all and :func:`open_decoded_cache` returns None (the caller falls back to the
per-image path; the log says why).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from tqdm import tqdm

from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest, Record
from dermasynth.storage.base import ObjectNotFound, ObjectStore

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_DIR = "decoded"
STORE_PREFIX = "caches/decoded"
META = "meta.json"
ARRAYS = ("train", "extents", "eval")
TRAIN_CANVAS_ASPECT = 4 / 3
_CHUNK = 1 << 22


class CacheError(RuntimeError):
    """A cache folder is incomplete, truncated or corrupt (the message says which part)."""


@dataclass(frozen=True)
class Geometry:
    """The preprocessing a cache is decoded at: square side and crop policy (normalization is applied later)."""

    image_size: int
    crop: Literal["center", "none"] = "center"

    @property
    def canvas_width(self) -> int:
        return math.ceil(self.image_size * TRAIN_CANVAS_ASPECT)

    def shapes(self, count: int) -> dict[str, tuple[int, ...]]:
        s = self.image_size
        return {"train": (count, s, self.canvas_width, 3), "extents": (count, 2), "eval": (count, s, s, 3)}

    def nbytes(self, count: int) -> int:
        """Bytes of the three arrays (uint8 images, int32 extents), headers aside."""
        shapes = self.shapes(count)
        return int(np.prod(shapes["train"])) + int(np.prod(shapes["eval"])) + 4 * int(np.prod(shapes["extents"]))


def cache_key(records: Sequence[Record], geometry: Geometry) -> str:
    """A hash of the rows' content (path and sha256 of every row, in order) and the geometry."""
    digest = hashlib.sha256(f"dermasynth-decoded-v{FORMAT_VERSION}|{geometry.image_size}|{geometry.crop}|".encode())
    for record in records:
        digest.update(f"{record.image}\0{record.sha256}\n".encode())
    return digest.hexdigest()[:32]


def _file_checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DecodedImages:
    """An opened, verified cache: memory-mapped arrays whose row ``i`` is ``records[i]``.

    Batches come out as torch tensors in channels-first layout (``(B, 3, H, W)`` uint8); rows are
    gathered in sorted order (sequential reads on a memory map) and put back in the asked order.
    """

    def __init__(self, folder: Path, records: Sequence[Record], geometry: Geometry, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.records = list(records)
        self.geometry = geometry
        self.meta = meta
        self.train = np.load(folder / "train.npy", mmap_mode="r")
        self.extents = np.load(folder / "extents.npy")
        self.eval = np.load(folder / "eval.npy", mmap_mode="r")
        self._row = {r.image: i for i, r in enumerate(self.records)}

    def __len__(self) -> int:
        return len(self.records)

    def rows_of(self, records: Sequence[Record]) -> np.ndarray:
        """Row indices of ``records`` (which must be rows of the cached manifest).

        Raises:
            KeyError: for a record the cache does not hold.
        """
        try:
            return np.fromiter((self._row[r.image] for r in records), dtype=np.int64, count=len(records))
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]} is not in the decoded cache {self.folder.name}") from None

    def _gather(self, array: np.ndarray, rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
        out[order] = array[rows[order]]
        return out

    def train_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Train-geometry pixels ``(B, 3, S, W)`` uint8 and each image's (height, width) on the canvas."""
        pixels = torch.from_numpy(self._gather(self.train, rows)).permute(0, 3, 1, 2)
        return pixels, torch.from_numpy(self.extents[rows])

    def eval_batch(self, rows: np.ndarray) -> torch.Tensor:
        """Eval-geometry pixels ``(B, 3, S, S)`` uint8, equal to ``pixels_transform`` of each image."""
        return torch.from_numpy(self._gather(self.eval, rows)).permute(0, 3, 1, 2)

    def eval_pixels(self, rows: np.ndarray) -> torch.Tensor:
        """Like :meth:`eval_batch` but contiguous (a copy), for callers that keep the tensor."""
        return self.eval_batch(rows).contiguous()


# -- building --------------------------------------------------------------------------------------


def _decoders(geometry: Geometry) -> tuple[v2.Compose, v2.Resize]:
    s = geometry.image_size
    if geometry.crop == "center":
        eval_tf = v2.Compose([v2.Resize(s, antialias=True), v2.CenterCrop(s), v2.PILToTensor()])
    else:
        eval_tf = v2.Compose([v2.Resize((s, s), antialias=True), v2.PILToTensor()])
    return eval_tf, v2.Resize(s, antialias=True)


def _decode_one(
    image: Image.Image, geometry: Geometry, eval_tf: v2.Compose, resize: v2.Resize
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(eval pixels (S,S,3), train pixels (h,w,3) with h, w <= canvas, (h, w))."""
    s, canvas = geometry.image_size, geometry.canvas_width
    eval_px = eval_tf(image).permute(1, 2, 0).numpy()
    resized = v2.functional.pil_to_tensor(resize(image))  # (3, h, w): the shorter side is s
    _, h, w = resized.shape
    if h > s:  # portrait: the central square
        top = round((h - s) / 2.0)
        resized, h = resized[:, top : top + s], s
    if w > canvas:
        left = round((w - canvas) / 2.0)
        resized, w = resized[:, :, left : left + canvas], canvas
    return eval_px, resized.permute(1, 2, 0).numpy(), (h, w)


def _build(
    manifest: Manifest, records: Sequence[Record], geometry: Geometry, folder: Path, key: str, progress: bool
) -> dict[str, Any]:
    shapes = geometry.shapes(len(records))
    train = np.lib.format.open_memmap(folder / "train.npy", mode="w+", dtype=np.uint8, shape=shapes["train"])
    evals = np.lib.format.open_memmap(folder / "eval.npy", mode="w+", dtype=np.uint8, shape=shapes["eval"])
    extents = np.zeros(shapes["extents"], dtype=np.int32)
    eval_tf, resize = _decoders(geometry)

    def decode(i: int) -> None:
        eval_px, train_px, (h, w) = _decode_one(load_rgb(manifest.path_of(records[i])), geometry, eval_tf, resize)
        evals[i] = eval_px
        train[i, :h, :w] = train_px
        train[i, :h, w:] = train_px[:, -1:]  # edge pixels repeated: bilinear reads at a crop's edge stay real
        train[i, h:, :] = train[i, h - 1 : h, :]
        extents[i] = (h, w)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in tqdm(
            pool.map(decode, range(len(records))),
            total=len(records),
            desc=f"decoding {len(records)} images at {geometry.image_size} px",
            unit="img",
            disable=not progress,
            mininterval=2.0,
        ):
            pass
    train.flush()
    evals.flush()
    np.save(folder / "extents.npy", extents)
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "count": len(records),
        "image_size": geometry.image_size,
        "crop": geometry.crop,
        "shapes": {name: list(shape) for name, shape in shapes.items()},
        "checksums": {name: _file_checksum(folder / f"{name}.npy") for name in ARRAYS},
    }
    (folder / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def verify(folder: Path, key: str, count: int, geometry: Geometry) -> dict[str, Any]:
    """The cache's metadata after checking key, count, shapes, file sizes and checksums.

    Raises:
        CacheError: naming what is missing, truncated or corrupt.
    """
    meta_path = folder / META
    if not meta_path.is_file():
        raise CacheError(f"{folder}: no {META} (an interrupted build)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheError(f"{meta_path}: unreadable ({exc})") from exc
    expected = {name: list(shape) for name, shape in geometry.shapes(count).items()}
    if meta.get("format") != FORMAT_VERSION or meta.get("key") != key or meta.get("count") != count:
        raise CacheError(f"{folder}: metadata is for another dataset, geometry or format")
    if meta.get("shapes") != expected:
        raise CacheError(f"{folder}: shapes {meta.get('shapes')} differ from the expected {expected}")
    for name in ARRAYS:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise CacheError(f"{path}: missing")
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:  # numpy refuses a file shorter than its header says
            raise CacheError(f"{path}: truncated or not a .npy file ({exc})") from exc
        if list(array.shape) != expected[name]:
            raise CacheError(f"{path}: shape {list(array.shape)}, expected {expected[name]}")
        del array
        if _file_checksum(path) != meta["checksums"].get(name):
            raise CacheError(f"{path}: checksum mismatch (corrupt)")
    return dict(meta)


# -- opening ---------------------------------------------------------------------------------------


def _free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def _fetch(store: ObjectStore, key: str, target: Path) -> bool:
    prefix = f"{STORE_PREFIX}/{key}"
    if not store.exists(f"{prefix}/{META}"):
        return False
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-fetch-", dir=target.parent))
    try:
        for name in (*[f"{a}.npy" for a in ARRAYS], META):
            store.get_file(f"{prefix}/{name}", staging / name)
    except ObjectNotFound:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return True


def _upload(store: ObjectStore, key: str, folder: Path) -> None:
    prefix = f"{STORE_PREFIX}/{key}"
    for name in [f"{a}.npy" for a in ARRAYS]:
        store.put_file(f"{prefix}/{name}", folder / name)
    store.put_file(f"{prefix}/{META}", folder / META)  # last: its presence marks a complete upload


def open_decoded_cache(
    manifest: Manifest,
    image_size: int,
    crop: Literal["center", "none"] = "center",
    *,
    cache_root: Path | None = None,
    store: ObjectStore | None = None,
    max_bytes: int | None = None,
    progress: bool = True,
    build: bool = True,
) -> DecodedImages | None:
    """The decoded cache of every row of ``manifest`` at this geometry: reused, fetched, or built now.

    Args:
        manifest: the dataset; the cache's rows are ``manifest.records`` in order.
        image_size, crop: the geometry (``Preprocessing.image_size`` and ``.crop``).
        cache_root: where caches live (``{cache_root}/decoded/{key}``); default ``settings.cache_root``.
        store: an object store shared by workers: a missing cache is fetched from it, a built one uploaded.
        max_bytes: disk budget of one cache; default ``settings.decoded_cache_max_bytes``.
        progress: show a tqdm bar while decoding.
        build: decode when no usable cache exists (locally or in ``store``); False: return None then.

    Returns:
        The opened cache, or None when it would exceed the disk budget or the free disk space (logged;
        the caller then uses the per-image path).
    """
    from dermasynth.config import get_settings

    settings = get_settings()
    root = (cache_root or settings.cache_root) / CACHE_DIR
    budget = settings.decoded_cache_max_bytes if max_bytes is None else max_bytes
    geometry = Geometry(image_size, crop)
    records = manifest.records
    key = cache_key(records, geometry)
    folder = root / key
    if folder.is_dir():
        try:
            return DecodedImages(folder, records, geometry, verify(folder, key, len(records), geometry))
        except CacheError as exc:
            logger.warning("decoded cache unusable, rebuilding it: %s", exc)
            shutil.rmtree(folder, ignore_errors=True)
    needed = geometry.nbytes(len(records))
    if needed > budget:
        logger.warning(
            "decoded cache not built: %d images at %d px need %.1f GB, over the %.1f GB budget "
            "(DERMASYNTH_DECODED_CACHE_MAX_BYTES); using the per-image path",
            len(records),
            image_size,
            needed / 1e9,
            budget / 1e9,
        )
        return None
    free = _free_bytes(root)
    if needed > free:
        logger.warning(
            "decoded cache not built: it needs %.1f GB and %s has %.1f GB free; using the per-image path",
            needed / 1e9,
            root,
            free / 1e9,
        )
        return None
    if store is not None:
        try:
            if _fetch(store, key, folder):
                try:
                    meta = verify(folder, key, len(records), geometry)
                    logger.info("decoded cache %s fetched from the object store", key)
                    return DecodedImages(folder, records, geometry, meta)
                except CacheError as exc:
                    logger.warning("decoded cache in the object store is unusable, rebuilding it: %s", exc)
                    shutil.rmtree(folder, ignore_errors=True)
        except OSError as exc:
            logger.warning("could not fetch the decoded cache %s from the object store (%s); decoding", key, exc)
    if not build:
        return None
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-build-", dir=root))
    try:
        meta = _build(manifest, records, geometry, staging, key, progress)
        if folder.is_dir():  # another process finished first: keep its copy if it is sound
            shutil.rmtree(staging, ignore_errors=True)
            return DecodedImages(folder, records, geometry, verify(folder, key, len(records), geometry))
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("decoded %d images at %d px into %s", len(records), image_size, folder)
    if store is not None:
        try:
            _upload(store, key, folder)
        except OSError as exc:
            logger.warning("could not upload the decoded cache %s (%s); it stays local", key, exc)
    return DecodedImages(folder, records, geometry, meta)
