"""A training run's files in its object store, and the trained model loaded back from them.

Layout of a run (keys relative to the run's store, e.g. a ``PrefixedStore`` on ``runs/{job_id}``):

- ``checkpoint.pth``: the latest epoch, everything a resume needs (model, optimizer, scheduler, scaler,
  epoch, best metric, early-stopping counter, history, config, classes, preprocessing, RNG states);
- ``epoch_NNN.pth``: the same after each epoch (unless the config turns them off);
- ``best.pth``: the model of the epoch with the best validation balanced accuracy, with its metadata;
- ``result.json``: the :class:`~dermasynth.classifier.engine.TrainResult`, written last (completion marker).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.models import build_model, penultimate_features
from dermasynth.data.transforms import Preprocessing
from dermasynth.storage.base import ObjectNotFound, ObjectStore
from dermasynth.storage.state_dicts import LATEST, load_state, save_state

BEST = "best.pth"
RESULT = "result.json"
FORMAT_VERSION = 1


def epoch_key(epoch: int) -> str:
    """The per-epoch checkpoint key, e.g. ``epoch_003.pth`` (epochs count from 1)."""
    return f"epoch_{epoch:03d}.pth"


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every random generator a training epoch draws from, in ``weights_only``-safe types."""
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached": float(np_cached),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Put back what :func:`capture_rng` recorded."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save_checkpoint(store: ObjectStore, state: dict[str, Any], *, keep_epoch: bool = True) -> None:
    """Write ``state`` as ``epoch_NNN.pth`` (optional) and then as ``checkpoint.pth``."""
    if keep_epoch:
        save_state(store, epoch_key(int(state["epoch"])), state)
    save_state(store, LATEST, state)


def load_checkpoint(store: ObjectStore, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The latest checkpoint of a run, or None when it has none yet.

    Raises:
        ValueError: if the checkpoint was written by an incompatible version.
    """
    try:
        state = load_state(store, LATEST, map_location=map_location)
    except ObjectNotFound:
        return None
    _check_format(state, LATEST)
    return state


def _check_format(state: dict[str, Any], key: str) -> None:
    version = state.get("format")
    if version != FORMAT_VERSION:
        raise ValueError(f"{key} has checkpoint format {version!r}; this version reads format {FORMAT_VERSION}")


@dataclass
class TrainedModel:
    """A trained classifier ready for inference: network (eval mode), classes, preprocessing, config."""

    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    config: TrainConfig
    epoch: int
    device: torch.device
    metrics: dict[str, Any] = field(default_factory=dict)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, K)`` for a preprocessed batch ``(N, 3, S, S)``."""
        with torch.no_grad():
            return self.model(x.to(self.device))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K)`` in the order of :attr:`classes`."""
        return self.logits(x).float().softmax(dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate-layer features ``(N, D)`` (the head's input) for a preprocessed batch."""
        with torch.no_grad():
            return penultimate_features(self.model, x.to(self.device)).float()


def load_trained(
    run: ObjectStore, which: Literal["best", "latest"] = "best", device: str | torch.device = "cpu"
) -> TrainedModel:
    """Load a run's best (or latest) model for evaluation, export or feature extraction.

    Args:
        run: the run's store (where :func:`~dermasynth.classifier.engine.fit` wrote).
        which: ``best`` (best validation balanced accuracy) or ``latest``.
        device: where to put the model.

    Raises:
        ValueError: for another ``which`` or an incompatible checkpoint.
        ObjectNotFound: if the run has no such checkpoint.
    """
    keys = {"best": BEST, "latest": LATEST}
    if which not in keys:
        raise ValueError(f"which={which!r} is not accepted: use 'best' or 'latest'")
    state = load_state(run, keys[which], map_location="cpu")
    _check_format(state, keys[which])
    config = TrainConfig.model_validate(state["config"])
    classes = list(state["classes"])
    model = build_model(config.model, len(classes), weights=None)
    model.load_state_dict(state["model"])
    target = torch.device(device)
    model.to(target).eval()
    preprocessing = Preprocessing.model_validate(state["preprocessing"])
    return TrainedModel(
        model=model,
        classes=classes,
        preprocessing=preprocessing,
        config=config,
        epoch=int(state["epoch"]),
        device=target,
        metrics=dict(state.get("val_metrics") or {}),
    )
