"""Per-class quality of a trained GAN: FID, KID, precision/recall, and a memorization check.

For each class the EMA generator makes as many images as the class has real training images (capped),
and both sets go through one feature space (see :mod:`dermasynth.gan.features`):

* **FID** and **KID** with torchmetrics (``FrechetInceptionDistance`` and ``KernelInceptionDistance``
  fed precomputed features). With the ~100 images of a rare class FID is strongly biased upwards;
  KID is unbiased, and both are reported with the sample sizes.
* **Precision and recall** of the generated distribution (Kynkäänniemi et al., 2019): a generated
  image is "precise" if it falls inside the k-NN ball of some real image, a real image is "recalled"
  if it falls inside the k-NN ball of some generated image.
* **The standard feature space**, when its weights are on disk: FID and KID also on the 2048-d pool
  features of torchmetrics' Inception-v3 (torch-fidelity's ``pt_inception-2015-12-05`` port of the
  TensorFlow FID network, the space published FIDs use), loaded from a local file
  (``standard_weights``). The images are upsampled from the GAN's resolution to 299 px, so figures
  compare with other GANs at the same resolution only. Without the file the report says that the
  standard space was not available and why.
* **Memorization**: the pixel RMSE (in [0, 1] units, at the GAN's resolution) of every generated image
  to its nearest real training image of its class. A generated image is flagged as a near-copy when
  (1) it is closer than ``near_copy_quantile`` of real images are to their nearest real image of
  *another lesion* (same class; over the same capped, seeded subset): closer to a training image than
  almost any two different real lesions are, and (2) that nearest lesion is much nearer than every
  other lesion (distance ratio under ``near_copy_ratio``). The second test keeps smooth, featureless
  images, which lie close to many plain real images at once, from being counted as copies.

:func:`evaluate_gan` writes ``gan_report.json`` and, under ``evaluation/``, a sample grid and a grid
of the closest generated/real pairs per class into the GAN's store.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dermasynth.classifier.config import TrainConfig
from dermasynth.data.manifest import Manifest
from dermasynth.gan.artifacts import REPORT_KEY, load_generator
from dermasynth.gan.features import FeatureExtractor, FeatureSpace, feature_classifier
from dermasynth.gan.grids import grid_png
from dermasynth.gan.real_images import load_real_images, training_records
from dermasynth.gan.sampling import generate, image_seed
from dermasynth.progress import Progress, ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore

logger = logging.getLogger(__name__)

EVALUATION_PREFIX = "evaluation"
PAIRS_SHOWN = 8
SAMPLES_SHOWN = 16
_EVAL_SEED_OFFSET = 7_919  # evaluation latents differ from those of a synthesis with the same seed
STANDARD_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
STANDARD_UNAVAILABLE = (
    "not measured: no local Inception-v3 weights were given (torchmetrics/torch-fidelity's "
    f"{STANDARD_WEIGHTS_FILE}; it cannot be downloaded here): pass the file to measure FID/KID in the "
    "standard feature space"
)


def standard_extractor(weights: Path) -> tuple[FeatureExtractor, str]:
    """torchmetrics' FID Inception-v3 (2048-d pool features) loaded from a local weights file, and its description.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not that network's state_dict (or torch-fidelity is missing).
    """
    if not weights.is_file():
        raise FileNotFoundError(f"Inception weights file {weights} does not exist")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        network = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights)
        )
    except (ModuleNotFoundError, RuntimeError, KeyError) as exc:
        raise ValueError(f"{weights} could not be loaded as torchmetrics' FID Inception-v3: {exc}") from exc
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]

    def extract(images: Tensor) -> Tensor:
        with torch.no_grad():
            return network((images.clamp(0, 1) * 255).round().to(torch.uint8)).double().cpu()

    return extract, (
        f"torchmetrics' FID Inception-v3, 2048-d pool features at 299 px (weights {weights.name}, sha256 {digest}...)"
    )


def evaluation_seeds(seed: int, label: str, count: int) -> list[int]:
    """The latent seeds of the ``count`` images :func:`evaluate_gan` generates for class ``label``."""
    return [image_seed(seed + _EVAL_SEED_OFFSET, label, i) for i in range(count)]


class NearCopy(BaseModel):
    """A generated image flagged as too close to a real training image."""

    seed: int
    nearest_real: str = Field(description="the real image's path in the manifest")
    rmse: float
    ratio: float | None = Field(description="rmse over the rmse to the nearest image of any other lesion")


class ClassQuality(BaseModel):
    """Quality figures of one class (None where the class has too few images for the figure)."""

    real_images: int = Field(description="real training images compared against (capped)")
    generated_images: int
    fid: float | None
    kid_mean: float | None
    kid_std: float | None
    kid_subset_size: int | None
    precision: float | None
    recall: float | None
    nearest_real_rmse_min: float
    nearest_real_rmse_median: float
    nearest_ratio_median: float | None = Field(description="median of nearest / nearest-other-lesion RMSE")
    near_copies: int
    near_copy_examples: list[NearCopy] = Field(default_factory=list, description="up to 8, closest first")
    standard_fid: float | None = Field(default=None, description="FID in the standard Inception feature space")
    standard_kid_mean: float | None = None
    standard_kid_std: float | None = None


class GanReport(BaseModel):
    """``gan_report.json``."""

    generator_id: str
    gan_step: int
    image_size: int
    feature_space: str
    standard_feature_space: str = Field(default=STANDARD_UNAVAILABLE, description="which, or why not measured")
    standard_weights: str | None = Field(default=None, description="the local Inception weights file used")
    classes: dict[str, ClassQuality]
    mean_fid: float | None = Field(description="mean over classes that have a FID")
    mean_kid: float | None
    mean_standard_fid: float | None = None
    mean_standard_kid: float | None = None
    near_copies: int = Field(description="all classes together")
    near_copy_threshold: float = Field(description="pixel RMSE under which a generated image may be a near-copy")
    near_copy_ratio: float = Field(description="... if also its nearest lesion is this much nearer than any other")
    k: int = Field(description="neighbourhood size of precision/recall")
    truncation: float
    seed: int
    grids: list[str] = Field(default_factory=list)
    seconds: float


class _Precomputed(nn.Module):
    """Identity 'feature network' for torchmetrics: the metrics are fed features computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def fid_kid(real: Tensor, fake: Tensor, *, seed: int = 0, subsets: int = 100) -> tuple[float, float, float, int]:
    """FID, KID mean, KID std and KID subset size between two feature sets (N, D) (each N >= 2).

    Raises:
        ValueError: if either set has fewer than 2 rows or their widths differ.
    """
    if real.shape[0] < 2 or fake.shape[0] < 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"need at least 2 feature rows of equal width per set, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Precomputed(dim), reset_real_features=True)
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    subset = min(1000, max(2, min(real.shape[0], fake.shape[0]) // 2))  # half: subsets differ, the std means something
    with warnings.catch_warnings():  # torchmetrics warns that KID keeps its features: a few thousand rows here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Precomputed(dim), subsets=subsets, subset_size=subset)
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return float(fid.compute()), float(kid_mean), float(kid_std), subset


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space.

    Raises:
        ValueError: if either set has k or fewer rows.
    """
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(
            f"precision/recall with k={k} needs more than {k} rows per set, got {real.shape[0]} real "
            f"and {fake.shape[0]} generated"
        )
    real, fake = real.double(), fake.double()

    def radii(x: Tensor) -> Tensor:  # distance to the k-th nearest other point
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    precision = (torch.cdist(fake, real) <= radii(real)[None, :]).any(dim=1).double().mean()
    recall = (torch.cdist(real, fake) <= radii(fake)[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def _rmse_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Pixel RMSE between every image of ``a`` and every image of ``b`` (uint8 batches), in [0, 1] units."""
    fa, fb = a.flatten(1).float() / 255, b.flatten(1).float() / 255
    return torch.cdist(fa, fb) / fa.shape[1] ** 0.5


def near_copy_threshold(images: Tensor, lesions: list[str], labels: Tensor, quantile: float) -> float:
    """The ``quantile`` of distances from real images to their nearest real image of another lesion, same class.

    Args:
        images: real uint8 images (N, 3, S, S).
        lesions: their lesion ids.
        labels: their class indices (N,).
        quantile: in (0, 1).

    Raises:
        ValueError: if no class holds two lesions (there is nothing to compare with).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"near_copy_quantile must lie in (0, 1), got {quantile}")
    lesion_index = {lesion: i for i, lesion in enumerate(dict.fromkeys(lesions))}
    ids = torch.tensor([lesion_index[lesion] for lesion in lesions])
    nearest: list[Tensor] = []
    for label in labels.unique():
        rows = (labels == label).nonzero().flatten()
        distances = _rmse_matrix(images[rows], images[rows])
        distances[ids[rows][:, None] == ids[rows][None, :]] = float("inf")
        best = distances.min(dim=1).values
        nearest.append(best[torch.isfinite(best)])
    pooled = torch.cat(nearest) if nearest else torch.empty(0)
    if pooled.numel() == 0:
        raise ValueError("the near-copy check needs a class with images of at least two lesions")
    return float(torch.quantile(pooled.double(), quantile))


def nearest_real(fake: Tensor, real: Tensor, lesions: list[str]) -> tuple[Tensor, Tensor, Tensor]:
    """For each generated image: the pixel RMSE to its nearest real image, that image's index, and the ratio
    of that RMSE to the RMSE of the nearest image of any other lesion (inf where there is no other lesion).

    Args:
        fake: generated uint8 images (F, 3, S, S).
        real: real uint8 images (R, 3, S, S), R >= 1.
        lesions: the real images' lesion ids.
    """
    distances = _rmse_matrix(fake, real)
    nearest, which = distances.min(dim=1)
    index = {lesion: i for i, lesion in enumerate(dict.fromkeys(lesions))}
    ids = torch.tensor([index[lesion] for lesion in lesions])
    other = distances.masked_fill(ids[which][:, None] == ids[None, :], float("inf")).min(dim=1).values
    ratio = torch.where(other.isfinite(), nearest / other.clamp(min=1e-12), torch.full_like(nearest, float("inf")))
    return nearest, which, ratio


@dataclass
class _ClassSets:
    real: Tensor
    real_paths: list[str]
    real_lesions: list[str]
    fake: Tensor
    seeds: list[int]


def _features(extract: FeatureExtractor, images: Tensor, batch_size: int) -> Tensor:
    parts = [extract(images[i : i + batch_size].float() / 255) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts).double().cpu()


def evaluate_gan(
    gan: ObjectStore,
    manifest: Manifest,
    feature_extractor: FeatureExtractor | None = None,
    *,
    feature_space: str | None = None,
    feature_config: TrainConfig | None = None,
    samples_per_class: int | None = None,
    max_real_per_class: int = 1000,
    k: int = 3,
    truncation: float = 1.0,
    seed: int = 0,
    near_copy_quantile: float = 0.01,
    near_copy_ratio: float = 0.5,
    batch_size: int = 64,
    device: str | None = None,
    progress: ProgressCallback = ignore_progress,
    standard_weights: Path | None = None,
) -> GanReport:
    """Measure a trained GAN per class against the real training images; write ``gan_report.json`` and grids.

    Args:
        gan: the GAN run's store.
        manifest: the dataset it was trained on (its train split's real images are the reference); GAN
            classes without real training images there are left out (with a warning).
        feature_extractor: float images (N, 3, S, S) in [0, 1] -> features (N, D). None: the penultimate
            layer of a classifier trained on the real images, trained once and cached in ``gan``
            (see :func:`~dermasynth.gan.features.feature_classifier`).
        feature_space: describes ``feature_extractor`` in the report (required with one).
        feature_config: options of the default feature classifier (ignored with a ``feature_extractor``).
        samples_per_class: generated images per class (default: as many as the class's real images).
        max_real_per_class: cap on the real images of a class compared in feature space (seeded subset);
            the memorization check always compares with all of them.
        k: neighbourhood size of precision/recall.
        truncation: truncation of the evaluated samples (1.0: the full distribution).
        seed: seeds the samples, the real subsets and KID's subsets.
        near_copy_quantile, near_copy_ratio: see the module docstring.
        batch_size: images per forward pass.
        device: where the generator runs (default: CUDA when available).
        progress: called once per class (and during the default classifier's training).
        standard_weights: a local file of torchmetrics' FID Inception-v3 weights: FID/KID are also measured
            in that standard feature space (None: the report says it was not measured).

    Raises:
        ValueError: for a feature extractor without a ``feature_space`` description, or a manifest without
            real training images of the GAN's classes.
    """
    if feature_extractor is not None and not feature_space:
        raise ValueError("feature_space must describe the feature_extractor (it is written into the report)")
    if samples_per_class is not None and samples_per_class < 2:
        raise ValueError(f"samples_per_class must be at least 2, got {samples_per_class}")
    began = time.perf_counter()
    standard: FeatureSpace | None = None
    if standard_weights is not None:
        standard = FeatureSpace(*standard_extractor(standard_weights))
    trained = load_generator(gan, device)
    records, available = training_records(manifest)
    classes = [label for label in trained.classes if label in available]
    if not classes:
        raise ValueError(
            f"the manifest's train split holds no real images of the GAN's classes "
            f"({', '.join(trained.classes)}); it holds {', '.join(available)}"
        )
    skipped = sorted(set(trained.classes) - set(classes))
    if skipped:
        logger.warning("classes %s have no real training images in this manifest; they are not evaluated", skipped)
    records = [r for r in records if r.label in classes]
    real = load_real_images(manifest, records, classes, trained.config.image_size, trained.config.crop)
    if feature_extractor is None:
        space = feature_classifier(
            gan, manifest, trained.config.image_size, feature_config, progress, device=trained.device
        )
    else:
        space = FeatureSpace(feature_extractor, feature_space or "")
    rng = torch.Generator().manual_seed(seed)
    subsets = [
        rows[torch.randperm(rows.numel(), generator=rng)[:max_real_per_class]]
        for rows in (torch.nonzero(real.labels == i).flatten() for i in range(len(classes)))
    ]
    chosen = torch.cat(subsets)
    threshold = near_copy_threshold(
        real.images[chosen],
        [real.records[i].lesion_id for i in chosen.tolist()],
        real.labels[chosen],
        near_copy_quantile,
    )

    results: dict[str, ClassQuality] = {}
    grids: list[str] = []
    for index, label in enumerate(classes):
        rows, shown = (real.labels == index).nonzero().flatten(), subsets[index]
        count = samples_per_class or max(int(shown.numel()), 2)
        seeds = evaluation_seeds(seed, label, count)
        fake = torch.cat(
            list(
                generate(
                    trained.generator,
                    [trained.class_index(label)] * count,
                    seeds,
                    truncation=truncation,
                    batch_size=batch_size,
                )
            )
        )
        sets = _ClassSets(
            real.images[rows],
            [real.records[i].image for i in rows.tolist()],
            [real.records[i].lesion_id for i in rows.tolist()],
            fake,
            seeds,
        )
        results[label], class_grids = _evaluate_class(
            gan, label, sets, real.images[shown], space, k, (threshold, near_copy_ratio), seed, batch_size
        )
        if standard is not None and shown.numel() >= 2 and count >= 2:
            fid_s, kid_s, kid_sd, _ = fid_kid(
                _features(standard.extract, real.images[shown], batch_size),
                _features(standard.extract, fake, batch_size),
                seed=seed,
            )
            results[label] = results[label].model_copy(
                update={"standard_fid": fid_s, "standard_kid_mean": kid_s, "standard_kid_std": kid_sd}
            )
        grids += class_grids
        progress(
            Progress(
                phase="evaluate",
                step=index + 1,
                total_steps=len(classes),
                message=label,
                metrics={"fid": results[label].fid, "kid": results[label].kid_mean},
            )
        )

    fids = [q.fid for q in results.values() if q.fid is not None]
    kids = [q.kid_mean for q in results.values() if q.kid_mean is not None]
    std_fids = [q.standard_fid for q in results.values() if q.standard_fid is not None]
    std_kids = [q.standard_kid_mean for q in results.values() if q.standard_kid_mean is not None]
    report = GanReport(
        generator_id=trained.generator_id,
        gan_step=trained.step,
        image_size=trained.config.image_size,
        feature_space=space.description,
        standard_feature_space=STANDARD_UNAVAILABLE if standard is None else standard.description,
        standard_weights=None if standard_weights is None else str(standard_weights),
        classes=results,
        mean_standard_fid=sum(std_fids) / len(std_fids) if std_fids else None,
        mean_standard_kid=sum(std_kids) / len(std_kids) if std_kids else None,
        mean_fid=sum(fids) / len(fids) if fids else None,
        mean_kid=sum(kids) / len(kids) if kids else None,
        near_copies=sum(q.near_copies for q in results.values()),
        near_copy_threshold=threshold,
        near_copy_ratio=near_copy_ratio,
        k=k,
        truncation=truncation,
        seed=seed,
        grids=grids,
        seconds=round(time.perf_counter() - began, 2),
    )
    gan.put_bytes(REPORT_KEY, report.model_dump_json(indent=2).encode(), "application/json")
    return report


def _evaluate_class(
    gan: ObjectStore,
    label: str,
    sets: _ClassSets,
    compared: Tensor,
    space: FeatureSpace,
    k: int,
    copy_rule: tuple[float, float],
    seed: int,
    batch_size: int,
) -> tuple[ClassQuality, list[str]]:
    real_features = _features(space.extract, compared, batch_size)
    fake_features = _features(space.extract, sets.fake, batch_size)
    fid = kid_mean = kid_std = None
    subset = None
    if real_features.shape[0] >= 2:
        fid, kid_mean, kid_std, subset = fid_kid(real_features, fake_features, seed=seed)
    precision = recall = None
    if real_features.shape[0] > k and fake_features.shape[0] > k:
        precision, recall = precision_recall(real_features, fake_features, k)
    else:
        logger.warning("class %s: too few images for precision/recall with k=%d", label, k)

    threshold, max_ratio = copy_rule
    nearest, which, ratio = nearest_real(sets.fake, sets.real, sets.real_lesions)
    order = nearest.argsort()
    # with a single real lesion there is no ratio to check (inf): the distance alone decides
    single = not bool(ratio.isfinite().any())
    flagged = [
        int(i) for i in order.tolist() if float(nearest[i]) < threshold and (single or float(ratio[i]) < max_ratio)
    ]
    examples = [
        NearCopy(
            seed=sets.seeds[i],
            nearest_real=sets.real_paths[int(which[i])],
            rmse=float(nearest[i]),
            ratio=None if single else float(ratio[i]),
        )
        for i in flagged[:PAIRS_SHOWN]
    ]
    finite = ratio.isfinite()

    samples_key = f"{EVALUATION_PREFIX}/samples/{label}.png"
    gan.put_bytes(samples_key, grid_png(sets.fake[:SAMPLES_SHOWN]), "image/png")
    closest = order[:PAIRS_SHOWN]
    pairs = torch.cat([sets.fake[closest], sets.real[which[closest]]])
    pairs_key = f"{EVALUATION_PREFIX}/nearest/{label}.png"
    gan.put_bytes(pairs_key, grid_png(pairs, columns=int(closest.numel())), "image/png")

    quality = ClassQuality(
        real_images=int(real_features.shape[0]),
        generated_images=int(fake_features.shape[0]),
        fid=fid,
        kid_mean=kid_mean,
        kid_std=kid_std,
        kid_subset_size=subset,
        precision=precision,
        recall=recall,
        nearest_real_rmse_min=float(nearest.min()),
        nearest_real_rmse_median=float(nearest.median()),
        nearest_ratio_median=float(ratio[finite].median()) if bool(finite.any()) else None,
        near_copies=len(flagged),
        near_copy_examples=examples,
    )
    return quality, [samples_key, pairs_key]
