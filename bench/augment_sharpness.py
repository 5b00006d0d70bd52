"""How sharp and how coloured are augmented training images, per-image path against batched path?

The same real HAM10000 training images go through the per-image train transform (PIL, torchvision v2)
and through :class:`BatchAugment` on the decoded cache, several draws each, and the eval pixels are
measured beside them. Sharpness is the mean absolute difference between neighbouring pixels of the
central half (away from rotation corners), in [0, 1] units; colour is each channel's mean and spread
there. A training distribution blurrier than the eval images is a train/test shift the model pays for.

    python bench/augment_sharpness.py                  # 256 images, 4 draws each, 64 px
    python bench/augment_sharpness.py --images 1024 --image-size 128

Skips (exit 0) when ../shared/data/ham10000_200x150 is not there.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from dermasynth.data.decoded_cache import open_decoded_cache
from dermasynth.data.images import load_rgb
from dermasynth.data.importer import import_dataset
from dermasynth.data.transforms import Augmentation, BatchAugment, Preprocessing, step_generator

HAM10000 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_200x150"


def describe(name: str, images: torch.Tensor) -> None:
    """Print sharpness and colour of ``images`` ((N, 3, S, S) in [0, 1]) over their central half."""
    s = images.shape[-1]
    c = images[:, :, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4]
    sharpness = ((c[..., 1:] - c[..., :-1]).abs().mean() + (c[..., 1:, :] - c[..., :-1, :]).abs().mean()) / 2
    mean = ", ".join(f"{v:.3f}" for v in c.mean((0, 2, 3)).tolist())
    std = ", ".join(f"{v:.3f}" for v in c.std((0, 2, 3)).tolist())
    print(f"{name:>36}  sharpness {sharpness.item():.4f}   RGB mean {mean}   RGB std {std}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HAM10000, help="HAM10000 folder (official layout)")
    parser.add_argument("--images", type=int, default=256, help="training images measured")
    parser.add_argument("--draws", type=int, default=4, help="augmented draws per image and path")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: the real HAM10000 is not at {args.data}")
        return
    pre = Preprocessing(image_size=args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = import_dataset(args.data, Path(tmp) / "ham10000", "ham10000", seed=0, copy=False)
        records = manifest.in_split("train")[: args.images]
        cache = open_decoded_cache(manifest, args.image_size, pre.crop)
        if cache is None:
            raise SystemExit("the decoded cache could not be built here (see the log)")
        rows = cache.rows_of(records)
        pixels, extents = cache.train_batch(rows)
        pixels = pixels.contiguous()
        print(f"{len(records)} training images, {args.draws} draws each, {args.image_size} px")
        describe("eval pixels (no augmentation)", cache.eval_pixels(rows).float() / 255)
        pil_images = [load_rgb(manifest.path_of(record)) for record in records]
        variants = {
            "all augmentations": Augmentation(),
            "no rotation": Augmentation(rotation_degrees=0),
            "no colour jitter": Augmentation(color_jitter=0),
        }
        for label, augment in variants.items():
            torch.manual_seed(0)
            transform = pre.train_transform(augment)
            per_image = torch.stack([pre.denormalize(transform(im)) for im in pil_images for _ in range(args.draws)])
            batch = BatchAugment(pre, augment)
            batched = torch.cat(
                [pre.denormalize(batch(pixels, extents, step_generator(0, 0, k))) for k in range(args.draws)]
            )
            describe(f"per-image, {label}", per_image)
            describe(f"batched, {label}", batched)


if __name__ == "__main__":
    main()
