"""Generated demo lesions: procedural, dermoscopy-like images so the demo and tests need no download.

These are drawings, not photographs of skin. Every one is marked ``source=generated`` and must never
be described as real. Each class gets its own shape, border, colour and texture, loosely after the
dermoscopic features clinicians look for, so that a classifier has something to learn:

=======  =========================================================================================
akiec    reddish, scaly patch, ill-defined border, white scale speckles
bcc      pink translucent nodule with branching red vessels and blue-grey ovoid nests
bkl      tan, sharply bordered, ridged ("brain-like") surface with white milia-like dots
df       small, round, light-brown ring around a central white scar-like patch
mel      large, asymmetric, irregular border, several colours (black, brown, blue-grey veil)
nv       round or oval, regular border, even brown with a fine pigment network
vasc     well-demarcated red-purple lagoons separated by lighter septa
=======  =========================================================================================

Images are 4:3 like HAM10000's (``size`` is the height). Classes follow HAM10000's proportions;
some lesions are drawn twice (a second view), as HAM10000 photographs some lesions more than once,
so lesion-grouped splits matter here too.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.special import expit

from dermasynth.data.manifest import Manifest, Record
from dermasynth.data.splits import SplitFractions, assign_splits
from dermasynth.labels import HAM10000_CLASSES, HAM10000_COUNTS

SECOND_VIEW_RATE = 0.25
MIN_PER_CLASS = 4

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class _Geometry:
    """Where a lesion lies on the canvas: pixel grids (in image heights), centre, polar coordinates."""

    xx: np.ndarray
    yy: np.ndarray
    cx: float
    cy: float
    rel: np.ndarray  # distance from the centre over the border's radius: 0 centre, 1 border
    theta: np.ndarray
    radius: float
    h: int


@dataclass(frozen=True)
class _Style:
    radius: tuple[float, float]  # fraction of image height
    irregularity: tuple[float, float]  # amplitude of the border's harmonics
    softness: float  # border blur, fraction of the radius
    colour: RGB
    colour_jitter: float


_STYLES: dict[str, _Style] = {
    "akiec": _Style((0.25, 0.38), (0.06, 0.10), 0.35, (0.78, 0.42, 0.38), 0.06),
    "bcc": _Style((0.20, 0.30), (0.02, 0.05), 0.20, (0.86, 0.58, 0.58), 0.04),
    "bkl": _Style((0.24, 0.38), (0.04, 0.08), 0.05, (0.68, 0.52, 0.36), 0.07),
    "df": _Style((0.14, 0.21), (0.01, 0.03), 0.30, (0.62, 0.44, 0.34), 0.05),
    "mel": _Style((0.30, 0.44), (0.10, 0.18), 0.12, (0.36, 0.22, 0.16), 0.06),
    "nv": _Style((0.22, 0.34), (0.01, 0.04), 0.15, (0.52, 0.33, 0.21), 0.08),
    "vasc": _Style((0.16, 0.28), (0.02, 0.06), 0.06, (0.58, 0.12, 0.24), 0.06),
}


def class_counts(total: int, min_per_class: int = MIN_PER_CLASS) -> dict[str, int]:
    """Split ``total`` images over the 7 classes in HAM10000's proportions (largest remainder),
    giving every class at least ``min_per_class`` (taken from the largest class).

    Raises:
        ValueError: if ``total`` cannot give every class its minimum.
    """
    classes = HAM10000_CLASSES
    if total < min_per_class * len(classes):
        raise ValueError(
            f"count {total} is too small: at least {min_per_class * len(classes)} images are "
            f"needed for {min_per_class} per class"
        )
    grand = sum(HAM10000_COUNTS.values())
    exact = {c: total * HAM10000_COUNTS[c] / grand for c in classes}
    counts = {c: int(exact[c]) for c in classes}
    for c in sorted(classes, key=lambda c: exact[c] - counts[c], reverse=True)[: total - sum(counts.values())]:
        counts[c] += 1
    for c in classes:
        short = min_per_class - counts[c]
        if short > 0:
            counts[c] += short
            counts[max(counts, key=lambda k: counts[k])] -= short
    return counts


def render_lesion(label: str, lesion_seed: int, view_seed: int, size: int = 64) -> Image.Image:
    """Draw one image of a generated lesion.

    Args:
        label: one of the HAM10000 class codes.
        lesion_seed: fixes the lesion (shape, colours, texture).
        view_seed: fixes this photograph of it (rotation, position, lighting, hair).
        size: image height in pixels; the width is 4/3 of it.

    Raises:
        ValueError: for an unknown label or a size under 16.
    """
    if label not in _STYLES:
        raise ValueError(f"label {label!r} has no generator; expected one of {', '.join(HAM10000_CLASSES)}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    style = _STYLES[label]
    les = np.random.default_rng([lesion_seed, 1])
    view = np.random.default_rng([lesion_seed, view_seed, 2])
    h, w = size, round(size * 4 / 3)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / h
    cx = w / h / 2 + view.normal(0, 0.04)
    cy = 0.5 + view.normal(0, 0.04)
    spin = view.uniform(0, 2 * math.pi)
    dx, dy = xx - cx, yy - cy
    dist = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) + spin

    radius = les.uniform(*style.radius)
    amp = les.uniform(*style.irregularity)
    border = np.ones_like(theta)
    for k in range(2, 9):
        border += amp / math.sqrt(k - 1) * les.normal() * np.cos(k * theta + les.uniform(0, 2 * math.pi))
    if label == "nv":  # oval
        border *= 1 + 0.15 * les.uniform() * np.cos(2 * theta)
    r = radius * border
    soft = max(style.softness * radius, 0.6 / h)
    inside = expit((r - dist) / soft)
    rel = dist / np.maximum(r, 1e-6)  # 0 at the centre, 1 on the border

    skin = np.array([0.88, 0.68, 0.58]) + view.normal(0, 0.03, 3)
    img = np.broadcast_to(skin, (h, w, 3)).copy()
    img *= 1 + 0.04 * _smooth_noise(view, h, w, 6)[..., None]

    tone = 1 + les.normal(0, style.colour_jitter)  # lighter or darker, same hue
    colour = np.clip(np.array(style.colour) * tone + les.normal(0, 0.015, 3), 0, 1)
    lesion = np.broadcast_to(colour, (h, w, 3)).copy()
    lesion *= 1 + 0.10 * _smooth_noise(les, h, w, 5)[..., None]
    _PAINTERS[label](lesion, les, _Geometry(xx, yy, cx, cy, rel, theta, radius, h))

    img = img * (1 - inside[..., None]) + lesion * inside[..., None]
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    if view.uniform() < 0.35:
        pil = _hairs(pil, view)
    if view.uniform() < 0.5:  # the dark rim of a dermatoscope's round field of view
        vignette = np.clip(1.25 - 0.9 * np.hypot(xx - w / h / 2, yy - 0.5), 0.25, 1)
        pil = Image.fromarray((np.asarray(pil) * vignette[..., None]).astype(np.uint8))
    light = 1 + view.normal(0, 0.05)
    return Image.fromarray(np.clip(np.asarray(pil) * light, 0, 255).astype(np.uint8))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], bicubically upsampled from a ``cells``-wide grid."""
    grid = rng.uniform(-1, 1, (cells, max(2, round(cells * w / h))))
    big = Image.fromarray(((grid + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 127.5 - 1


def _blobs(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian spots of width ``sigma`` at ``centres`` ((n, 2) array of x, y), clipped to 1."""
    out = np.zeros_like(xx)
    for x, y in centres:
        out += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) * rng.uniform(0.6, 1.0)
    return np.clip(out, 0, 1)


def _points_inside(
    rng: np.random.Generator, n: int, cx: float, cy: float, radius: float, lo: float = 0.0, hi: float = 0.85
) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi, n)
    dist = radius * np.sqrt(rng.uniform(lo**2, hi**2, n))
    return np.stack([cx + dist * np.cos(angle), cy + dist * np.sin(angle)], axis=1)


def _mix(lesion: np.ndarray, weight: np.ndarray, colour: RGB) -> None:
    lesion *= 1 - weight[..., None]
    lesion += weight[..., None] * np.array(colour)


def _paint_nv(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    period = rng.uniform(0.035, 0.05)
    net = np.abs(np.sin(g.xx / period * math.pi)) * np.abs(np.sin(g.yy / period * math.pi))
    _mix(lesion, 0.35 * (net < 0.25) * (g.rel < 0.9), (0.30, 0.18, 0.12))
    _mix(lesion, 0.25 * np.clip(g.rel - 0.6, 0, 1), (0.70, 0.50, 0.38))  # lighter rim


def _paint_mel(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    for colour in [(0.08, 0.05, 0.05), (0.45, 0.50, 0.62), (0.62, 0.30, 0.25), (0.50, 0.34, 0.22)]:
        spots = _points_inside(rng, int(rng.integers(1, 4)), g.cx, g.cy, g.radius)
        _mix(lesion, 0.85 * _blobs(rng, g.xx, g.yy, spots, g.radius * rng.uniform(0.15, 0.35)), colour)
    dots = _points_inside(rng, int(rng.integers(6, 14)), g.cx, g.cy, g.radius, 0.6, 1.0)
    _mix(lesion, _blobs(rng, g.xx, g.yy, dots, g.radius * 0.05), (0.10, 0.06, 0.05))


def _paint_bkl(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    wobble = _smooth_noise(rng, g.xx.shape[0], g.xx.shape[1], 4)
    ridges = np.sin((g.xx * math.cos(g.theta.mean()) + g.yy) / 0.02 + 4 * wobble)
    _mix(lesion, 0.35 * (ridges > 0.5), (0.45, 0.33, 0.22))
    milia = _points_inside(rng, int(rng.integers(3, 8)), g.cx, g.cy, g.radius)
    _mix(lesion, _blobs(rng, g.xx, g.yy, milia, g.radius * 0.06), (0.96, 0.93, 0.86))


def _paint_bcc(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    nests = _points_inside(rng, int(rng.integers(2, 5)), g.cx, g.cy, g.radius)
    _mix(lesion, 0.8 * _blobs(rng, g.xx, g.yy, nests, g.radius * 0.12), (0.40, 0.45, 0.55))
    canvas = Image.new("L", (g.xx.shape[1], g.xx.shape[0]))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 4))):
        _branch(draw, rng, (g.cx * g.h, g.cy * g.h), rng.uniform(0, 2 * math.pi), g.radius * g.h * 0.7, 3, g.h)
    vessels = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.4)), dtype=np.float32) / 255
    _mix(lesion, 0.9 * vessels, (0.75, 0.08, 0.12))


def _branch(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    length: float,
    depth: int,
    h: int,
) -> None:
    end = (start[0] + length * math.cos(angle), start[1] + length * math.sin(angle))
    draw.line([start, end], fill=255, width=max(1, round(h / 80)))
    if depth > 0:
        for turn in (-0.6, 0.6):
            _branch(draw, rng, end, angle + turn + rng.normal(0, 0.2), length * 0.55, depth - 1, h)


def _paint_akiec(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    scale = rng.uniform(size=g.xx.shape) > 0.88
    _mix(lesion, 0.7 * scale * (g.rel < 1), (0.95, 0.92, 0.80))
    period = rng.uniform(0.05, 0.07)
    pseudo = np.abs(np.sin(g.xx / period * math.pi) * np.sin(g.yy / period * math.pi))
    _mix(lesion, 0.30 * (pseudo > 0.7), (0.85, 0.25, 0.25))


def _paint_df(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    scar = expit((rng.uniform(0.35, 0.5) - g.rel) / 0.06)
    _mix(lesion, 0.9 * scar, (0.93, 0.88, 0.84))
    _mix(lesion, 0.3 * np.clip((g.rel - 0.6) * 3, 0, 1), (0.50, 0.33, 0.24))


def _paint_vasc(lesion: np.ndarray, rng: np.random.Generator, g: _Geometry) -> None:
    _mix(lesion, np.full_like(g.xx, 0.5), (0.92, 0.70, 0.72))  # pale septa everywhere ...
    lagoons = _points_inside(rng, int(rng.integers(4, 9)), g.cx, g.cy, g.radius, 0.0, 0.8)
    _mix(
        lesion,
        _blobs(rng, g.xx, g.yy, lagoons, g.radius * rng.uniform(0.14, 0.2)) ** 0.5,  # ... red lagoons
        (0.50, 0.05, 0.22) if rng.uniform() < 0.5 else (0.35, 0.10, 0.35),
    )


_PAINTERS: dict[str, Callable[[np.ndarray, np.random.Generator, _Geometry], None]] = {
    "akiec": _paint_akiec,
    "bcc": _paint_bcc,
    "bkl": _paint_bkl,
    "df": _paint_df,
    "mel": _paint_mel,
    "nv": _paint_nv,
    "vasc": _paint_vasc,
}


def _hairs(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(int(rng.integers(1, 5))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * math.pi)
        points = []
        for _ in range(6):
            points.append((x, y))
            angle += rng.normal(0, 0.2)
            x += math.cos(angle) * h / 6
            y += math.sin(angle) * h / 6
        draw.line(points, fill=(40, 28, 22), width=max(1, round(h / 100)))
    return img


def make_demo_dataset(
    out: Path,
    count: int = 700,
    size: int = 64,
    seed: int = 0,
    fractions: SplitFractions | None = None,
    on_image: Callable[[], None] | None = None,
) -> Manifest:
    """Write a ready DermaSynth dataset of generated lesions to ``out``.

    Args:
        out: the dataset folder; ``images/`` and ``manifest.csv`` are written into it.
        count: number of images (HAM10000 proportions, at least 4 per class).
        size: image height in pixels (width is 4/3 of it).
        seed: fixes every image and the split.
        fractions: split shares (70/15/15 by default).
        on_image: called after each image is written (progress bars).

    Returns:
        The manifest that was written; every row has ``source=generated``.
    """
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, str]] = []  # image, label, lesion, sha
    for label, n in class_counts(count).items():
        made, lesion_no = 0, 0
        while made < n:
            lesion_no += 1
            lesion_id = f"GEN_{label}_{lesion_no:05d}"
            lesion_seed = int(rng.integers(2**31))
            # small classes get one view per lesion, so that each split can hold a lesion of them
            views = 2 if rng.uniform() < SECOND_VIEW_RATE and n >= 12 and n - made >= 2 else 1
            for view in range(views):
                name = f"images/{lesion_id}_{view}.png"
                buffer = io.BytesIO()
                render_lesion(label, lesion_seed, view, size).save(buffer, format="PNG")
                (out / name).write_bytes(buffer.getvalue())
                rows.append((name, label, lesion_id, hashlib.sha256(buffer.getvalue()).hexdigest()))
                made += 1
                if on_image:
                    on_image()
    splits = assign_splits([r[1] for r in rows], [r[2] for r in rows], fractions, seed)
    manifest = Manifest(
        [
            Record(
                image=name,
                label=label,
                lesion_id=lesion,
                split=split,  # type: ignore[arg-type]
                source="generated",
                sha256=sha,
                split_seed=seed,
            )
            for (name, label, lesion, sha), split in zip(rows, splits, strict=True)
        ],
        out,
    )
    manifest.write(out)
    return manifest
