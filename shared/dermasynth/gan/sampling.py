"""Images from a generator, reproducibly: every image is a function of (generator, class, seed, truncation).

The latent of an image is drawn from its own seeded random stream, so an image can be made again
from the provenance recorded in a manifest row, whatever batch it was made in.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor

from dermasynth.gan.networks import Generator

SEED_BITS = 52  # seeds stay exact in JSON and float64


def image_seed(base_seed: int, label: str, index: int) -> int:
    """The seed of the ``index``-th image of class ``label`` in a synthesis seeded with ``base_seed``."""
    digest = hashlib.sha256(f"{base_seed}/{label}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def latents(seeds: Sequence[int], z_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """One standard-normal latent per seed, (len(seeds), z_dim), independent of batching and device."""
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    return torch.stack(rows).to(device) if rows else torch.empty(0, z_dim, device=device)


def to_uint8(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> uint8 pixels (clipped)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def generate(
    generator: Generator, labels: Sequence[int], seeds: Sequence[int], *, truncation: float = 1.0, batch_size: int = 64
) -> Iterator[Tensor]:
    """Yield uint8 image batches (B, 3, S, S) on the CPU for each (label index, seed) pair, in order.

    Raises:
        ValueError: if ``labels`` and ``seeds`` differ in length or ``batch_size`` < 1.
    """
    if len(labels) != len(seeds):
        raise ValueError(f"labels ({len(labels)}) and seeds ({len(seeds)}) must have the same length")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        for start in range(0, len(seeds), batch_size):
            z = latents(seeds[start : start + batch_size], generator.z_dim, device)
            label_batch = torch.tensor(list(labels[start : start + batch_size]), dtype=torch.long, device=device)
            yield to_uint8(generator(z, label_batch, truncation)).cpu()
    finally:
        generator.train(was_training)


def png_bytes(image: Tensor) -> bytes:
    """A uint8 (3, H, W) tensor as PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()
