"""Content hashes that name an experiment's artefacts, so equal work is done once and found again.

* a dataset: its rows' content (image hashes, labels, lesions, splits, sources, provenance), not
  where its files lie;
* the GAN: the real dataset and the GAN options that decide the generator;
* a synthetic dataset: the GAN and the synthesis plan (it is made again identically from them);
* a run: its dataset and every training option that decides its result (model, seed, balance ...);
* an evaluation (inside its run's folder): the held-out images, in order, and the evaluation options.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dermasynth.data.manifest import Manifest

KEY_LENGTH = 20  # hex characters: 80 bits


def content_key(payload: Any) -> str:
    """A short sha256 of ``payload`` serialized as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def dataset_key(manifest: Manifest) -> str:
    """The content of a dataset, independent of its folder and row order."""
    rows = sorted(
        "|".join(str(v) for v in (r.sha256, r.label, r.lesion_id, r.split, r.source, r.generator, r.seed, r.truncation))
        for r in manifest.records
    )
    return content_key({"rows": rows})


def gan_key(dataset: str, gan_fields: dict[str, Any]) -> str:
    """The GAN trained on dataset ``dataset`` with these options."""
    return content_key({"dataset": dataset, "gan": gan_fields})


def synthetic_key(gan: str, plan: dict[str, Any]) -> str:
    """The real dataset plus the images GAN ``gan`` made by ``plan``."""
    return content_key({"gan": gan, "plan": plan})


def run_key(dataset: str, train_fields: dict[str, Any]) -> str:
    """A classifier trained on dataset ``dataset`` with these result-deciding options."""
    return content_key({"dataset": dataset, "train": train_fields})


def evaluation_key(held_out: list[str], options: dict[str, Any]) -> str:
    """An evaluation on these held-out images (paths, hashes and labels, in the order predictions keep) with
    these options, inside one run's folder."""
    return content_key({"held_out": held_out, "evaluation": options})
