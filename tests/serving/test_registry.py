from __future__ import annotations

from pathlib import Path

import pytest

from dermasynth.serving.model_repository import BatchingOptions
from dermasynth.serving.registry import ModelRegistry, UnknownModel
from dermasynth.serving.schemas import ModelLineage
from dermasynth.storage import FilesystemStore
from tests.serving.contracts import exported


def test_versions_carry_lineage_and_the_live_flag(tmp_path: Path) -> None:
    registry = ModelRegistry(FilesystemStore(tmp_path))
    lineage = ModelLineage(run="runs/abc", dataset="ds1", job_id="abc", metrics={"balanced_accuracy": 0.7})
    first = registry.register("classifier", exported(b"1"), lineage)
    second = registry.register("classifier", exported(b"2"), ModelLineage(run="runs/def"))
    assert (first.version, second.version) == (1, 2)
    assert first.lineage == lineage and first.architecture == "resnet18" and first.image_size == 32
    assert first.ood_threshold == 100.0 and first.classes[0] == "akiec"
    assert registry.names() == ["classifier"]
    assert registry.live("classifier").version is None
    assert [v.live for v in registry.versions("classifier")] == [False, False]

    registry.record_live("classifier", 1, "deploy", BatchingOptions(max_queue_delay_us=100))
    live = registry.record_live("classifier", 2, "deploy", BatchingOptions())
    assert live.version == 2
    assert [(h.version, h.previous, h.action) for h in live.history] == [(1, None, "deploy"), (2, 1, "deploy")]
    assert [v.live for v in registry.versions("classifier")] == [False, True]
    assert registry.version("classifier", 2).live
    assert registry.serving_options("classifier") == BatchingOptions()


def test_unknown_versions_name_what_exists(tmp_path: Path) -> None:
    registry = ModelRegistry(FilesystemStore(tmp_path))
    registry.register("classifier", exported(), ModelLineage())
    with pytest.raises(UnknownModel, match=r"no version 5; registered versions: \[1\]"):
        registry.version("classifier", 5)
    with pytest.raises(ValueError, match="model name"):
        registry.live("../etc")
