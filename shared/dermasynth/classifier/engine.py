"""The classifier training engine, after torchvision's classification references.

:func:`train_one_epoch` and :func:`evaluate` are the plain loops; :func:`fit` wires data, model,
optimizer, schedule, class balance, mixed precision, DistributedDataParallel, checkpoints every epoch,
resume and early stopping around them. Validation (and the choice of the best epoch) uses balanced
accuracy on the real (or generated demo) images of the ``val`` split; synthetic images only train.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler

from dermasynth.classifier.checkpoint import (
    BEST,
    FORMAT_VERSION,
    RESULT,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from dermasynth.classifier.models import build_model, check_input_size, preprocessing_for, set_backbone_trainable
from dermasynth.classifier.sampling import DistributedWeightedSampler, class_weights, sample_weights, weighted_sampler
from dermasynth.data.dataset import CachedBatches, EvalBatches, ManifestDataset
from dermasynth.data.decoded_cache import DecodedImages, open_decoded_cache
from dermasynth.data.manifest import Manifest
from dermasynth.data.transforms import BatchAugment, Preprocessing, step_generator
from dermasynth.metrics.classification import classification_metrics
from dermasynth.progress import Cancelled, Progress, ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore
from dermasynth.storage.state_dicts import LATEST, save_state

logger = logging.getLogger(__name__)

TrainSampler = WeightedRandomSampler | RandomSampler | DistributedWeightedSampler | DistributedSampler[Any]
StepCallback = Callable[[int, float, int], None]
"""Called after every optimizer step with (steps done, latest mean loss, images seen) of the epoch."""
Prepare = Callable[[Any, int], tuple[torch.Tensor, ...]]
"""Turns a loader's batch and its step index (from 0) into (inputs, targets) on the training device, or
(inputs, targets, per-image loss weights) when the training set weighs its images (``synthetic_weight``)."""


def _to_device(device: torch.device) -> Prepare:
    def prepare(batch: Any, step: int) -> tuple[torch.Tensor, ...]:
        return tuple(part.to(device, non_blocking=True) for part in batch)

    return prepare


class EpochRecord(BaseModel):
    """One epoch of a run: training loss and speed, validation metrics."""

    epoch: int
    lr: float
    train_loss: float
    train_images: int
    train_s: float
    images_per_s: float
    backbone_frozen: bool = False
    val_loss: float
    val_accuracy: float
    val_balanced_accuracy: float
    val_macro_f1: float
    val_auc: float | None = None
    val_recall: dict[str, float] = Field(default_factory=dict)


class TrainResult(BaseModel):
    """What a finished run reports (``result.json``)."""

    best_epoch: int
    best_val_balanced_accuracy: float
    epochs_run: int
    stopped_early: bool
    history: list[EpochRecord]
    classes: list[str]
    config: TrainConfig
    train_counts: dict[str, int] = Field(description="training images per class, synthetic included")
    train_sources: dict[str, int] = Field(description="training images per source (real/generated/synthetic)")
    val_images: int
    world_size: int = 1
    device: str = "cpu"
    amp_dtype: str | None = None
    wall_s: float = 0.0
    data_path: Literal["cache", "per_image"] = "per_image"


@dataclass(frozen=True)
class EpochStats:
    """What :func:`train_one_epoch` measured."""

    loss: float
    images: int
    seconds: float
    steps: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def amp_dtype_of(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run uses: None without AMP; fp16 (with GradScaler) or bf16.

    Raises:
        ValueError: for fp16 on a CPU (use bf16 there).
    """
    if not config.amp:
        return None
    name = config.amp_dtype or ("fp16" if device.type == "cuda" else "bf16")
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"amp_dtype fp16 needs a CUDA device, not {device}; on CPU use bf16")
    if device.type == "cpu" and not _cpu_has_fast_bf16():
        logger.warning(
            "bf16 autocast on a CPU without native bf16 kernels (%s): expect it to be slower than fp32",
            torch.backends.cpu.get_cpu_capability(),
        )
    return torch.float16 if name == "fp16" else torch.bfloat16


def _cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16/AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    grad_clip: float | None = None,
    max_steps: int | None = None,
    log_every: int = 10,
    on_step: StepCallback | None = None,
    prepare: Prepare | None = None,
) -> EpochStats:
    """One pass over ``loader``: forward and loss under autocast, exactly one optimizer step per batch.

    The scaler is a no-op unless it was made enabled (fp16 on CUDA); gradients are unscaled before
    clipping. The loss is read back (a GPU sync) every ``log_every`` steps and at the end.

    Args:
        loader: batches; ``(inputs, targets)`` pairs unless ``prepare`` reads them.
        prepare: makes a batch into device tensors (e.g. the decoded cache's uint8 pixels, augmented on
            the device); default: move ``(inputs, targets)`` to ``device``.
    """
    prepare = prepare or _to_device(device)
    total = len(loader) if isinstance(loader, Sized) else None
    model.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    images = steps = 0
    latest = math.nan
    start = time.perf_counter()
    for batch in loader:
        inputs, targets, *weights = prepare(batch, steps)
        inputs = inputs.contiguous(memory_format=memory_format)
        with _autocast(device, amp_dtype):
            logits = model(inputs)
            # per-image weights (synthetic_weight): a weighted mean of per-image losses
            loss = criterion(logits, targets, weights[0]) if weights else criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach() * targets.size(0)
        images += targets.size(0)
        steps += 1
        last = steps == max_steps
        if steps % log_every == 0 or last or steps == total:
            latest = float(loss_sum) / images
        if on_step is not None:
            on_step(steps, latest, images)
        if last:
            break
    return EpochStats(
        loss=float(loss_sum) / max(images, 1), images=images, seconds=time.perf_counter() - start, steps=steps
    )


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    tta: bool = False,
    prepare: Prepare | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every image in ``loader``.

    Args:
        tta: average the softmax over the 8 flips and right-angle rotations (dermoscopy has no up).
        prepare: as in :func:`train_one_epoch` (never augments: evaluation data stays as it is).

    Returns:
        ``(targets (N,), probabilities (N, K))`` as numpy arrays.
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    all_targets: list[torch.Tensor] = []
    all_probs: list[torch.Tensor] = []
    prepare = prepare or _to_device(device)
    with torch.no_grad():
        for step, batch in enumerate(loader):
            inputs, targets = prepare(batch, step)
            inputs = inputs.contiguous(memory_format=memory_format)
            views = list(_dihedral_views(inputs)) if tta else [inputs]
            probs = torch.zeros((), device=device)
            for view in views:
                with _autocast(device, amp_dtype):
                    logits = model(view)
                probs = probs + logits.float().softmax(dim=1)
            all_probs.append((probs / len(views)).cpu())
            all_targets.append(targets.cpu())
    if not all_probs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    return torch.cat(all_targets).numpy().astype(np.int64), torch.cat(all_probs).numpy()


def _dihedral_views(batch: torch.Tensor) -> Iterator[torch.Tensor]:
    for k in range(4):
        rotated = torch.rot90(batch, k, dims=(2, 3))
        yield rotated
        yield rotated.flip(3)


class SourceWeighted(torch.utils.data.Dataset[tuple[torch.Tensor, int, float]]):
    """A training set whose items carry a loss weight: ``synthetic_weight`` for synthetic images, 1 for the rest."""

    def __init__(self, dataset: ManifestDataset, synthetic_weight: float) -> None:
        self.dataset = dataset
        self.targets = dataset.targets
        self.weights = [synthetic_weight if r.source == "synthetic" else 1.0 for r in dataset.records]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, float]:
        image, target = self.dataset[i]
        return image, target, self.weights[i]


class SampleWeightedCrossEntropy(nn.Module):
    """Cross-entropy averaged with a weight per image (times the class weight, as ``nn.CrossEntropyLoss`` does)."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing, reduction="none")
        self.class_weight = weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        per_image = self.loss(logits, targets)
        w = torch.ones_like(per_image) if weights is None else weights.to(per_image.dtype)
        norm = w if self.class_weight is None else w * self.class_weight[targets].to(per_image.dtype)
        return (per_image * w).sum() / norm.sum().clamp(min=1e-12)


# -- fit ------------------------------------------------------------------------------------------------


def fit(
    config: TrainConfig,
    manifest: Manifest,
    out: ObjectStore,
    progress: ProgressCallback = ignore_progress,
    *,
    resume: bool = False,
    cache_root: Path | None = None,
    cache_store: ObjectStore | None = None,
) -> TrainResult:
    """Train a classifier on ``manifest``'s train split, validate on its val split, checkpoint to ``out``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this; the model is wrapped in
    DistributedDataParallel, the class-weighted sampler is split across ranks, validation predictions
    are gathered, and only rank 0 writes to ``out`` and reports progress (a ``Cancelled`` raised there
    stops all ranks at the end of the epoch). In a single process ``Cancelled`` propagates at once.

    Args:
        config: the training options.
        manifest: the dataset; its ``train`` rows (real and synthetic) train, its ``val`` rows validate.
        out: the run's store: ``checkpoint.pth``, ``epoch_NNN.pth``, ``best.pth``, ``result.json``.
        progress: called between steps and after each validation.
        resume: continue from ``out``'s ``checkpoint.pth`` (start afresh if there is none); a finished
            run returns its stored result without training again.
        cache_root: where the decoded-image cache lives (default ``settings.cache_root``); see
            :mod:`dermasynth.data.decoded_cache` and ``config.data_path``.
        cache_store: an object store the decoded cache is fetched from and uploaded to (shared workers).

    Returns:
        The run's :class:`TrainResult`.

    Raises:
        FileExistsError: if ``out`` already holds a run and ``resume`` is False.
        ValueError: an empty train or val split, a resume with other options, or options the data or
            hardware cannot serve.
        Cancelled: when the progress callback cancels; the last epoch's checkpoint is kept.
    """
    ctx = init_distributed(config.device)
    if resume and out.exists(RESULT):
        logger.info("run already finished; returning its stored result")
        return TrainResult.model_validate_json(out.get_bytes(RESULT))
    state = load_checkpoint(out) if resume else None
    if not resume and out.exists(LATEST):
        raise FileExistsError(
            "the run's store already holds a training run (checkpoint.pth); resume it or choose another output"
        )
    with _algorithms(config.deterministic):
        return _Run(config, manifest, out, ctx, state, cache_root, cache_store).fit(progress)


@contextlib.contextmanager
def _algorithms(deterministic: bool) -> Iterator[None]:
    """Deterministic kernels (or cuDNN autotuning) for one run; the process's settings come back after it."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    """The state of one fit call; methods are the steps of :func:`fit`."""

    def __init__(
        self,
        config: TrainConfig,
        manifest: Manifest,
        out: ObjectStore,
        ctx: DistributedContext,
        state: dict[str, Any] | None,
        cache_root: Path | None = None,
        cache_store: ObjectStore | None = None,
    ) -> None:
        self.config, self.manifest, self.out, self.ctx = config, manifest, out, ctx
        self.device = ctx.device
        self.amp_dtype = amp_dtype_of(config, self.device)
        self.classes = manifest.classes
        if state is not None:
            self._check_resumable(state)
        self.train_records = manifest.in_split("train")
        self.val_records = [r for r in manifest.in_split("val") if r.source != "synthetic"]
        if len(self.train_records) < 2:
            raise ValueError(f"the train split holds {len(self.train_records)} images; training needs at least 2")
        if not self.val_records:
            raise ValueError(
                "the val split holds no images; validation (early stopping, best epoch) needs some: "
                "import the dataset with --val-frac > 0"
            )

        _seed_everything(config.seed)  # the same initial model on every rank
        self.preprocessing = (
            Preprocessing.model_validate(state["preprocessing"]) if state else preprocessing_for(config)
        )
        self.model = build_model(config.model, len(self.classes), None if state else config.weights)
        check_input_size(self.model, config.image_size)
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if ctx.distributed:
            _seed_everything(config.seed + ctx.rank)  # each rank its own augmentation stream

        self.generator = torch.Generator().manual_seed(config.seed + ctx.rank)
        self.train_set: ManifestDataset | SourceWeighted = ManifestDataset(
            manifest, self.train_records, self.preprocessing.train_transform(config.augment), self.classes
        )
        if config.synthetic_weight != 1.0:
            self.train_set = SourceWeighted(self.train_set, config.synthetic_weight)
        self.sampler = self._train_sampler()
        val_set = ManifestDataset(
            manifest, self.val_records[ctx.rank :: ctx.world_size], self.preprocessing.eval_transform(), self.classes
        )
        drop_last = len(self.sampler) >= config.batch_size
        self.cache = self._open_cache(cache_root, cache_store)
        self.loader: Iterable[Any]
        self.val_loader: Iterable[Any]
        self.augment: BatchAugment | None = None
        self.normalizer = self.preprocessing.pixel_normalizer().to(self.device)
        if self.cache is not None:  # decoded once; augmented and normalized on the training device
            augmented = config.augment.enabled
            self.augment = BatchAugment(self.preprocessing, config.augment) if augmented else None
            self.loader = CachedBatches(
                self.cache,
                self.train_records,
                self.train_set.targets,
                self.sampler,
                config.batch_size,
                drop_last=drop_last,
                augmented=augmented,
                device=self._resident_device(self.cache, augmented),
                weights=self.train_set.weights if isinstance(self.train_set, SourceWeighted) else None,
            )
            self.val_loader = EvalBatches(self.cache, val_set.records, val_set.targets, config.batch_size)
        else:  # the per-image path: PIL decode and augmentation in loader processes
            cuda = self.device.type == "cuda"
            self.loader = DataLoader(
                self.train_set,
                batch_size=config.batch_size,
                sampler=self.sampler,
                num_workers=config.num_workers,
                pin_memory=cuda,
                generator=self.generator,
                drop_last=drop_last,
            )
            self.val_loader = DataLoader(
                val_set, batch_size=config.batch_size, num_workers=config.num_workers, pin_memory=cuda
            )
        weight = (
            class_weights(self.train_set.targets, len(self.classes)).to(self.device)
            if config.balance == "loss"
            else None
        )
        self.criterion: nn.Module = (
            SampleWeightedCrossEntropy(weight=weight, label_smoothing=config.label_smoothing)
            if config.synthetic_weight != 1.0
            else nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
        )
        self.optimizer = _optimizer(config, self.model, self.device)
        self.scheduler = _scheduler(config, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.start_epoch = 0
        self.best_metric = -1.0
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: list[EpochRecord] = []
        if state is not None:
            self._restore(state)
        batches = len(self.loader)
        self.steps_per_epoch = min(batches, config.max_steps_per_epoch or batches)

    # -- setup -----------------------------------------------------------------------------------------
    def _open_cache(self, cache_root: Path | None, cache_store: ObjectStore | None) -> DecodedImages | None:
        """The decoded cache (rank 0 builds it, the others wait and open it), or None for the per-image path."""
        config, ctx = self.config, self.ctx
        if config.data_path == "per_image":
            return None

        def open_cache() -> DecodedImages | None:
            return open_decoded_cache(
                self.manifest,
                self.preprocessing.image_size,
                self.preprocessing.crop,
                cache_root=cache_root,
                store=cache_store,
                progress=ctx.is_main,
            )

        cache = open_cache() if ctx.is_main else None
        barrier(ctx)
        if not ctx.is_main:
            cache = open_cache()
        if cache is None and config.data_path == "cache":
            raise ValueError(
                "data_path 'cache' asked for, but the decoded cache cannot be built here (see the log: disk "
                "budget or free space); use data_path 'auto' or 'per_image'"
            )
        return cache

    def _resident_device(self, cache: DecodedImages, augmented: bool) -> torch.device | None:
        """A GPU with room to spare holds the whole cache, so batches never cross the PCIe bus."""
        if self.device.type != "cuda":
            return None
        nbytes = (cache.train if augmented else cache.eval).nbytes
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.device if nbytes <= free // 4 else None

    def _prepare(self, epoch: int) -> Prepare | None:
        """Batch -> device tensors for the cached path: per-step seeded augmentation, or just normalization."""
        if self.cache is None:
            return None
        device, seed, rank = self.device, self.config.seed, self.ctx.rank

        def prepare(batch: Any, step: int) -> tuple[torch.Tensor, ...]:
            pixels, extents, targets, *weights = batch
            pixels = pixels.to(device, non_blocking=True)
            if self.augment is not None:
                inputs = self.augment(pixels, extents, step_generator(seed, epoch, step, rank))
            else:
                inputs = self.normalizer(pixels)
            return inputs, *(t.to(device, non_blocking=True) for t in (targets, *weights))

        return prepare

    def _prepare_eval(self) -> Prepare | None:
        if self.cache is None:
            return None

        def prepare(batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            pixels, targets = batch
            return self.normalizer(pixels.to(self.device, non_blocking=True)), targets

        return prepare

    def _check_resumable(self, state: dict[str, Any]) -> None:
        stored = TrainConfig.model_validate(state["config"])
        mine, theirs = self.config.result_fields(), stored.result_fields()
        differing = sorted(k for k in mine if mine[k] != theirs.get(k))
        if differing:
            raise ValueError(
                "cannot resume with other options than the run was started with; differing: "
                + ", ".join(f"{k} (run: {theirs.get(k)!r}, now: {mine[k]!r})" for k in differing)
            )
        if list(state["classes"]) != self.classes:
            raise ValueError(
                f"cannot resume: the run's classes {state['classes']} differ from the dataset's {self.classes}"
            )

    def _train_sampler(self) -> TrainSampler:
        config, ctx, targets = self.config, self.ctx, self.train_set.targets
        if config.balance == "sampler":
            if ctx.distributed:
                return DistributedWeightedSampler(
                    sample_weights(targets, len(self.classes)), ctx.world_size, ctx.rank, seed=config.seed
                )
            return weighted_sampler(targets, len(self.classes), generator=self.generator)
        if ctx.distributed:
            return DistributedSampler(self.train_set, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed)
        return RandomSampler(self.train_set, generator=self.generator)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = [EpochRecord.model_validate(r) for r in state["history"]]
        restore_rng(state["rng"][self.ctx.rank] if isinstance(state["rng"], list) else state["rng"], self.generator)
        logger.info("resuming after epoch %d of %d", self.start_epoch, self.config.epochs)

    # -- loop ------------------------------------------------------------------------------------------
    def fit(self, progress: ProgressCallback) -> TrainResult:
        config, ctx = self.config, self.ctx
        began = time.perf_counter()
        steps_done = 0
        cancel_requested = False
        stopped_early = (
            bool(self.history) and self.config.patience is not None and self.bad_epochs >= self.config.patience
        )
        report = progress if ctx.is_main else ignore_progress
        wrapped: nn.Module | None = None
        frozen: bool | None = None
        for epoch in range(self.start_epoch, 0 if stopped_early else config.epochs):
            if frozen != (epoch < config.freeze_epochs):
                frozen = epoch < config.freeze_epochs
                set_backbone_trainable(self.model, not frozen)
                wrapped = self._wrap()
            assert wrapped is not None
            if isinstance(self.sampler, DistributedWeightedSampler | DistributedSampler):
                self.sampler.set_epoch(epoch)

            def on_step(
                step: int, loss: float, images: int, epoch: int = epoch, t0: float = time.perf_counter()
            ) -> None:
                nonlocal steps_done, cancel_requested
                steps_done += 1
                elapsed = time.perf_counter() - t0
                remaining = (config.epochs - epoch - 1) * self.steps_per_epoch + self.steps_per_epoch - step
                try:
                    report(
                        Progress(
                            phase="train",
                            epoch=epoch + 1,
                            total_epochs=config.epochs,
                            step=step,
                            total_steps=self.steps_per_epoch,
                            loss=None if math.isnan(loss) else loss,
                            images_per_s=images * ctx.world_size / elapsed if elapsed > 0 else None,
                            eta_s=(time.perf_counter() - began) / steps_done * remaining,
                        )
                    )
                except Cancelled:
                    if not ctx.distributed:
                        raise
                    cancel_requested = True

            lr = self.optimizer.param_groups[0]["lr"]
            stats = train_one_epoch(
                wrapped,
                self.loader,
                self.criterion,
                self.optimizer,
                self.scaler,
                self.device,
                amp_dtype=self.amp_dtype,
                channels_last=config.channels_last,
                grad_clip=config.grad_clip,
                max_steps=config.max_steps_per_epoch,
                log_every=config.log_every,
                on_step=on_step,
                prepare=self._prepare(epoch),
            )
            record = self._validate(epoch, lr, stats, bool(frozen))
            self.history.append(record)
            improved = record.val_balanced_accuracy > self.best_metric
            if improved:
                self.best_metric, self.best_epoch, self.bad_epochs = record.val_balanced_accuracy, epoch + 1, 0
            else:
                self.bad_epochs += 1
            self._step_schedule(record)
            stopped_early = config.patience is not None and self.bad_epochs >= config.patience
            self._save(epoch + 1, record, improved)
            try:
                report(
                    Progress(
                        phase="validate",
                        epoch=epoch + 1,
                        total_epochs=config.epochs,
                        images_per_s=record.images_per_s,
                        metrics=record.model_dump(exclude={"epoch"}),
                        message=f"epoch {epoch + 1}: val balanced accuracy "
                        f"{record.val_balanced_accuracy:.4f} (best {self.best_metric:.4f})",
                    )
                )
            except Cancelled:
                if not ctx.distributed:
                    raise
                cancel_requested = True
            if ctx.distributed and all_reduce_sum(ctx, [float(cancel_requested)])[0] > 0:
                raise Cancelled(f"cancelled after epoch {epoch + 1}")
            if stopped_early:
                logger.info(
                    "early stop after epoch %d: no better val balanced accuracy for %d epochs",
                    epoch + 1,
                    config.patience,
                )
                break
        return self._finish(stopped_early, time.perf_counter() - began)

    def _wrap(self) -> nn.Module:
        if not self.ctx.distributed:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def _validate(self, epoch: int, lr: float, stats: EpochStats, frozen: bool) -> EpochRecord:
        ctx = self.ctx
        targets, probs = evaluate(
            self.model,
            self.val_loader,
            self.device,
            amp_dtype=self.amp_dtype,
            channels_last=self.config.channels_last,
            prepare=self._prepare_eval(),
        )
        parts = all_gather_objects(ctx, (targets, probs))
        targets = np.concatenate([t for t, _ in parts])
        probs = np.concatenate([p for _, p in parts if p.size])
        metrics = classification_metrics(targets, probs, self.classes, bootstrap=0)
        val_loss = float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None)).mean())
        loss_total, images, seconds = all_reduce_sum(ctx, [stats.loss * stats.images, stats.images, stats.seconds])
        mean_seconds = seconds / ctx.world_size
        return EpochRecord(
            epoch=epoch + 1,
            lr=lr,
            train_loss=loss_total / max(images, 1),
            train_images=int(images),
            train_s=mean_seconds,
            images_per_s=images / mean_seconds if mean_seconds > 0 else 0.0,
            backbone_frozen=frozen,
            val_loss=val_loss,
            val_accuracy=metrics.accuracy,
            val_balanced_accuracy=metrics.balanced_accuracy,
            val_macro_f1=metrics.macro_f1,
            val_auc=metrics.auc,
            val_recall={name: m.recall for name, m in metrics.per_class.items() if m.support},
        )

    def _step_schedule(self, record: EpochRecord) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(record.val_balanced_accuracy)
        elif self.scheduler is not None:
            self.scheduler.step()

    def _save(self, epoch: int, record: EpochRecord, improved: bool) -> None:
        rng = (
            all_gather_objects(self.ctx, capture_rng(self.generator))
            if self.ctx.distributed
            else capture_rng(self.generator)
        )
        if not self.ctx.is_main:
            return
        meta = {
            "format": FORMAT_VERSION,
            "epoch": epoch,
            "config": self.config.model_dump(mode="json"),
            "classes": self.classes,
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "val_metrics": record.model_dump(exclude={"epoch"}),
        }
        model_state = self.model.state_dict()
        if improved:
            save_state(self.out, BEST, {**meta, "model": model_state})
        save_checkpoint(
            self.out,
            {
                **meta,
                "model": model_state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "history": [r.model_dump() for r in self.history],
                "rng": rng,
            },
            keep_epoch=self.config.keep_epoch_checkpoints,
        )

    def _finish(self, stopped_early: bool, seconds: float) -> TrainResult:
        train_counts = Counter(r.label for r in self.train_records)
        result = TrainResult(
            best_epoch=self.best_epoch,
            best_val_balanced_accuracy=self.best_metric,
            epochs_run=len(self.history),
            stopped_early=stopped_early,
            history=self.history,
            classes=self.classes,
            config=self.config,
            train_counts={c: train_counts.get(c, 0) for c in self.classes},
            train_sources=dict(sorted(Counter(r.source for r in self.train_records).items())),
            val_images=len(self.val_records),
            world_size=self.ctx.world_size,
            device=str(self.device),
            amp_dtype=None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch."),
            wall_s=seconds,
            data_path="per_image" if self.cache is None else "cache",
        )
        if self.ctx.is_main:
            self.out.put_bytes(RESULT, result.model_dump_json(indent=2).encode(), content_type="application/json")
        barrier(self.ctx)
        return result


def fused_optimizer(device: torch.device) -> bool:
    """Whether SGD/Adam/AdamW take ``fused=True`` on ``device``: one kernel for all parameters instead of a
    loop over them (resnet18's AdamW step on a 2-core CPU: 35.6 ms plain, 24.0 foreach, 6.7 fused)."""
    return device.type in {"cpu", "cuda"}


def _optimizer(config: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = list(model.parameters())
    fused = fused_optimizer(device)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=2)
    return None
