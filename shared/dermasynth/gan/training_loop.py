"""Training a class-conditional GAN: scheduling, EMA generator, checkpoints, snapshots, grids and resume.

:class:`GanTrainer` holds the networks, optimizers, augmentation and random streams of one run and
does one discriminator or generator step at a time; :func:`train_gan` feeds it real images, keeps
the schedule, and writes everything a run leaves behind (see :mod:`dermasynth.gan.artifacts`).

A run is reproducible and resumable: every random draw comes from two seeded generators (one for
picking real images, one on the device for latents, flips and augmentation) whose states are saved
with the networks, so a run resumed from a checkpoint continues exactly as it would have.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dermasynth.classifier.engine import fused_optimizer
from dermasynth.data.manifest import Manifest
from dermasynth.gan.artifacts import (
    GENERATOR_KEY,
    GRID_PREFIX,
    OPTIONS_KEY,
    RESULT_KEY,
    SNAPSHOT_PREFIX,
    STATS_KEY,
    GanResult,
    build_discriminator,
    build_generator,
    generator_id,
    generator_state,
)
from dermasynth.gan.augment import build_augment
from dermasynth.gan.config import GanConfig
from dermasynth.gan.grids import write_class_grids
from dermasynth.gan.loss import GanLoss
from dermasynth.gan.real_images import RealImages, load_real_images, to_gan_range, training_records
from dermasynth.progress import Cancelled, Progress, ProgressCallback, ignore_progress
from dermasynth.storage.base import ObjectStore
from dermasynth.storage.state_dicts import LATEST, load_state, save_state

__all__ = ["GanResult", "GanTrainer", "train_gan"]

logger = logging.getLogger(__name__)

# Options that may change when a run is resumed; any other explicitly given option must match the run's.
RESUMABLE_CHANGES = frozenset(
    {"steps", "snapshot_every", "checkpoint_every", "grid_every", "grid_size", "log_every", "device", "amp"}
)
_CLASS_POWER = {"proportional": 1.0, "sqrt": 0.5, "balanced": 0.0}


class GanTrainer:
    """Networks, optimizers, EMA generator, augmentation and random streams of one run.

    Args:
        config: a resolved config (see :meth:`GanConfig.resolved`).
        num_classes: number of classes the GAN learns.
    """

    def __init__(self, config: GanConfig, num_classes: int) -> None:
        if config.device is None or config.channel_base is None or config.r1_gamma is None:
            raise ValueError("GanTrainer needs a resolved config; call config.resolved() first")
        self.config = config
        self.device = torch.device(config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = build_generator(config, num_classes).to(self.device)
            self.discriminator = build_discriminator(config, num_classes).to(self.device)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.augment = build_augment(config).to(self.device)
        fused = fused_optimizer(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=config.betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=config.betas, fused=fused)
        self.data_rng = torch.Generator().manual_seed(config.seed + 1)
        self.device_rng = torch.Generator(self.device).manual_seed(config.seed + 2)
        amp = config.uses_amp()
        self.amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
        scale = amp and self.amp_dtype == torch.float16
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=scale)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=scale)
        autocast: Callable[[], AbstractContextManager[object]] = (
            (lambda: torch.autocast(self.device.type, dtype=self.amp_dtype)) if amp else contextlib.nullcontext
        )
        self.loss = GanLoss(
            self.generator,
            self.discriminator,
            self.augment,
            kind=config.loss,
            r1_gamma=config.r1_gamma,
            r1_interval=config.r1_interval,
            autocast=autocast,
        )

    # -- data ---------------------------------------------------------------------------------------
    def sampling_weights(self, real: RealImages) -> Tensor:
        """Per-image probability of being drawn, following ``config.class_sampling``."""
        counts = torch.bincount(real.labels, minlength=len(real.classes)).double()
        class_weight = counts.clamp(min=1) ** _CLASS_POWER[self.config.class_sampling] * (counts > 0)
        return (class_weight / counts.clamp(min=1))[real.labels]

    def next_batch(self, images: Tensor, labels: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Draw a batch (with replacement) of real images in [-1, 1] and their labels, flipped if asked."""
        index = torch.multinomial(weights, self.config.batch_size, replacement=True, generator=self.data_rng)
        index = index.to(images.device)
        real = to_gan_range(images[index])
        if self.config.mirror:
            n = real.shape[0]
            flip_x = torch.rand(n, device=self.device, generator=self.device_rng) < 0.5
            flip_y = torch.rand(n, device=self.device, generator=self.device_rng) < 0.5
            real = torch.where(flip_x[:, None, None, None], real.flip(3), real)
            real = torch.where(flip_y[:, None, None, None], real.flip(2), real)
        return real, labels[index]

    def _latents(self, n: int) -> Tensor:
        return torch.randn(n, self.config.z_dim, device=self.device, generator=self.device_rng)

    # -- phases -------------------------------------------------------------------------------------
    def discriminator_step(self, real: Tensor, labels: Tensor, step: int) -> dict[str, float]:
        """One discriminator update on a real batch and a generated batch of the same labels."""
        self.generator.requires_grad_(False)
        self.discriminator.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        result = self.loss.discriminator_phase(
            real, labels, self._latents(real.shape[0]), step=step, rng=self.device_rng
        )
        self.scaler_d.scale(result.loss).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        self.augment.adjust(real.shape[0])
        return result.stats

    def generator_step(self, labels: Tensor) -> dict[str, float]:
        """One generator update: images of ``labels`` judged by the (frozen) discriminator."""
        self.generator.requires_grad_(True)
        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        result = self.loss.generator_phase(labels, self._latents(labels.shape[0]), rng=self.device_rng)
        self.scaler_g.scale(result.loss).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        return result.stats

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """Move the EMA generator towards the generator; the decay ramps up over the first steps."""
        beta = min(self.config.ema_beta, (1 + step) / (10 + step))
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            ema.lerp_(live.detach(), 1 - beta)

    def step(self, images: Tensor, labels: Tensor, weights: Tensor, step: int) -> dict[str, float]:
        """One training step (discriminator, generator, EMA); returns its figures."""
        real, batch_labels = self.next_batch(images, labels, weights)
        stats = self.discriminator_step(real, batch_labels, step)
        stats.update(self.generator_step(batch_labels))
        self.update_ema(step)
        stats["augment_p"] = self.augment.probability
        return stats

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "augment": self.augment.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng_data": self.data_rng.get_state(),
            "rng_device": self.device_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.augment.load_state_dict(state["augment"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state["scaler_g"]:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.data_rng.set_state(state["rng_data"])
        self.device_rng.set_state(state["rng_device"])


class _Stats:
    """Running means of a step's figures, flushed every ``log_every`` steps into a history."""

    def __init__(self, history: list[dict[str, float]] | None = None) -> None:
        self.history = list(history or [])
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, stats: dict[str, float]) -> None:
        for key, value in stats.items():
            self._sums[key] += value
            self._counts[key] += 1

    def flush(self, step: int, seconds: float) -> dict[str, float]:
        entry = {"step": float(step), "seconds": round(seconds, 2)}
        entry.update({key: self._sums[key] / self._counts[key] for key in sorted(self._sums)})
        self.history.append(entry)
        self._sums.clear()
        self._counts.clear()
        return entry


def _resume_config(config: GanConfig, saved: dict[str, Any]) -> GanConfig:
    """The saved run's config with the options that may change taken from ``config``.

    Raises:
        ValueError: if ``config`` explicitly sets an option to a value other than the run's.
    """
    previous = GanConfig.model_validate(saved)
    conflicts = [
        f"{name}={getattr(config, name)!r} (the run has {getattr(previous, name)!r})"
        for name in sorted(config.model_fields_set - RESUMABLE_CHANGES)
        if getattr(config, name) != getattr(previous, name)
    ]
    if conflicts:
        raise ValueError(
            "cannot resume with changed options: "
            + "; ".join(conflicts)
            + f". Only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume"
        )
    changes = {name: getattr(config, name) for name in config.model_fields_set & RESUMABLE_CHANGES}
    changes.setdefault("device", None)  # re-resolved: a run may continue on another machine
    return GanConfig.model_validate({**previous.model_dump(), **changes}).resolved()


def _finished_result(out: ObjectStore, saved_step: int, steps: int) -> GanResult | None:
    """The stored result if the run is complete at ``saved_step`` and needs no more steps."""
    if saved_step < steps or not out.exists(RESULT_KEY):
        return None
    result = GanResult.model_validate_json(out.get_bytes(RESULT_KEY))
    return result if result.step == saved_step else None


def _write_json(store: ObjectStore, key: str, payload: Any) -> None:
    store.put_bytes(key, json.dumps(payload, indent=2).encode(), "application/json")


def train_gan(
    config: GanConfig,
    manifest: Manifest,
    out: ObjectStore,
    progress: ProgressCallback = ignore_progress,
    *,
    resume: bool = False,
    cache_root: Path | None = None,
) -> GanResult:
    """Train a class-conditional GAN on the real images of the manifest's train split.

    Args:
        config: the run's options (open ones are resolved for the device).
        manifest: the dataset; only its ``train`` rows that are not ``synthetic`` are used.
        out: the run's store: options, checkpoints, snapshots, grids, stats and the result go here.
        progress: called after every step; a :class:`~dermasynth.progress.Cancelled` raised by it stops
            the run once its state is checkpointed, and propagates.
        resume: continue the run saved in ``out`` (from its last checkpoint, with its options;
            ``steps`` and the intervals may change). A finished run is returned at once.
        cache_root: where the decoded-image cache the real images come from lives (default
            ``settings.cache_root``; shared with the classifier, see :mod:`dermasynth.data.decoded_cache`).

    Returns:
        The :class:`GanResult` also written to ``result.json``.

    Raises:
        FileExistsError: if ``out`` already holds a run and ``resume`` is False.
        ValueError: for options or classes that cannot be used (the message says which and why).
    """
    saved: dict[str, Any] | None = None
    if out.exists(LATEST):
        if not resume:
            raise FileExistsError(
                "the output already holds a GAN run (checkpoint.pth); resume it (--resume) or choose another output"
            )
        saved = load_state(out, LATEST)
        config = _resume_config(config, saved["options"])
        finished = _finished_result(out, int(saved["step"]), config.steps)
        if finished is not None:
            return finished
    else:
        if resume:
            logger.info("nothing to resume in the output; starting a new run")
        config = config.resolved()

    records, classes = training_records(manifest, config.classes)
    if saved is not None and saved["classes"] != classes:
        raise ValueError(f"the manifest's train classes {classes} differ from the run's {saved['classes']}")
    real = load_real_images(manifest, records, classes, config.image_size, config.crop, cache_root=cache_root)
    trainer = GanTrainer(config, len(classes))
    start, seconds, history = 0, 0.0, []
    if saved is not None:
        trainer.load_state_dict(saved)
        start, seconds, history = int(saved["step"]), float(saved["seconds"]), list(saved["stats"])
        logger.info("resuming GAN training at step %d of %d", start, config.steps)
    train_counts = real.counts()
    _write_json(
        out,
        OPTIONS_KEY,
        {
            "options": config.model_dump(mode="json"),
            "classes": classes,
            "train_images": train_counts,
            "torch": torch.__version__,
        },
    )

    stats = _Stats(history)
    grid_seeds = [config.seed * 1000 + i for i in range(config.grid_size**2)]
    images, labels = real.images.to(trainer.device), real.labels.to(trainer.device)
    weights = trainer.sampling_weights(real)
    snapshots = sorted(out.list(f"{SNAPSHOT_PREFIX}/"))
    grid_keys: list[str] = []
    session_start, step, last_saved = time.perf_counter(), start, start

    def elapsed() -> float:
        return seconds + time.perf_counter() - session_start

    def checkpoint() -> None:
        nonlocal last_saved
        state = trainer.state_dict()
        state.update(
            step=step,
            seconds=elapsed(),
            stats=stats.history,
            classes=classes,
            options=config.model_dump(mode="json"),
            train_images=train_counts,
        )
        save_state(out, LATEST, state)
        _write_json(out, STATS_KEY, stats.history)
        last_saved = step

    try:
        for step_index in range(start, config.steps):
            figures = trainer.step(images, labels, weights, step_index)
            step = step_index + 1
            stats.add(figures)
            if step % config.log_every == 0 or step == config.steps:
                entry = stats.flush(step, elapsed())
                logger.info(
                    "step %d/%d %s",
                    step,
                    config.steps,
                    " ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "step"),
                )
            if step % config.snapshot_every == 0:
                key = f"{SNAPSHOT_PREFIX}/step-{step:07d}.pth"
                save_state(out, key, generator_state(classes, config, trainer.generator_ema.state_dict(), step))
                snapshots.append(key)
            if step % config.grid_every == 0 or step == config.steps:
                grid_keys = write_class_grids(
                    out, f"{GRID_PREFIX}/step-{step:07d}", trainer.generator_ema, classes, grid_seeds
                )
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
            done = step - start
            rate = done / max(time.perf_counter() - session_start, 1e-9)
            progress(
                Progress(
                    phase="gan",
                    step=step,
                    total_steps=config.steps,
                    loss=figures["loss_g"],
                    images_per_s=rate * config.batch_size,
                    eta_s=(config.steps - step) / rate if rate else None,
                    metrics={k: round(v, 5) for k, v in figures.items()},
                )
            )
    except Cancelled:
        if last_saved != step:
            checkpoint()
        logger.info("GAN training cancelled at step %d; checkpoint saved", step)
        raise
    except BaseException:
        logger.exception("GAN training failed at step %d; the last checkpoint is at step %d", step, last_saved)
        raise

    if last_saved != step:  # resumed a run that had already reached its steps
        checkpoint()
    return _finish(out, trainer, config, classes, train_counts, step, elapsed(), snapshots, grid_keys, stats.history)


def _finish(
    out: ObjectStore,
    trainer: GanTrainer,
    config: GanConfig,
    classes: list[str],
    train_counts: dict[str, int],
    step: int,
    seconds: float,
    snapshots: list[str],
    grid_keys: list[str],
    history: list[dict[str, float]],
) -> GanResult:
    """Write ``generator.pth`` and, last, ``result.json``."""
    ema_state = trainer.generator_ema.state_dict()
    save_state(out, GENERATOR_KEY, generator_state(classes, config, ema_state, step))
    if not grid_keys:
        grid_keys = write_class_grids(
            out,
            f"{GRID_PREFIX}/step-{step:07d}",
            trainer.generator_ema,
            classes,
            [config.seed * 1000 + i for i in range(config.grid_size**2)],
        )
    result = GanResult(
        step=step,
        classes=classes,
        image_size=config.image_size,
        generator_id=generator_id(ema_state),
        train_images=train_counts,
        snapshots=snapshots,
        grids=grid_keys,
        device=str(trainer.device),
        seconds=round(seconds, 2),
        steps_per_s=round(step / seconds, 4) if seconds > 0 else 0.0,
        final_stats={k: v for k, v in (history[-1] if history else {}).items() if k != "step"},
    )
    _write_json(out, RESULT_KEY, result.model_dump(mode="json"))
    return result
