from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from dermasynth.config import Settings
from dermasynth.serving.model_repository import (
    BatchingOptions,
    ModelRepository,
    check_model_name,
    render_config,
    repository_location,
    sync_repository,
)
from dermasynth.storage import FilesystemStore, ObjectNotFound
from tests.serving.contracts import exported


def test_config_names_the_contract_tensors_batching_and_versions() -> None:
    options = BatchingOptions(
        max_batch_size=16,
        preferred_batch_sizes=(4, 16),
        max_queue_delay_us=500,
        instance_kind="gpu",
        instance_count=2,
        intra_op_threads=3,
    )
    text = render_config("classifier", [2, 1], options, warmup_image_size=64, num_classes=7, cam=True)
    assert 'name: "classifier"' in text and 'backend: "onnxruntime"' in text
    assert "max_batch_size: 16" in text
    assert "versions: [ 1, 2 ]" in text
    assert re.search(r'name: "image__0" data_type: TYPE_UINT8 dims: \[ 3, -1, -1 \]', text)
    assert 'name: "logits__0" data_type: TYPE_FP32 dims: [ 7 ]' in text and 'name: "ood_score__1"' in text
    assert 'name: "cam__2" data_type: TYPE_FP32 dims: [ 7, -1, -1 ]' in text
    assert "preferred_batch_size: [ 4, 16 ]" in text and "max_queue_delay_microseconds: 500" in text
    assert "kind: KIND_GPU count: 2" in text
    assert '"intra_op_thread_count" value: { string_value: "3" }' in text
    assert "dims: [ 3, 64, 64 ] zero_data: true" in text
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def test_instance_kind_comes_from_the_setting_unless_the_deploy_names_one() -> None:
    unnamed = BatchingOptions()
    assert "kind: KIND_CPU" in render_config("classifier", [1], unnamed)
    assert "kind: KIND_GPU" in render_config("classifier", [1], unnamed, default_kind="gpu")
    assert "kind: KIND_CPU" in render_config(
        "classifier", [1], BatchingOptions(instance_kind="cpu"), default_kind="gpu"
    )
    text = render_config("classifier", [1], unnamed)
    assert "cam__2" not in text and 'name: "logits__0" data_type: TYPE_FP32 dims: [ -1 ]' in text


def test_batching_options_refuse_preferred_sizes_above_the_maximum() -> None:
    with pytest.raises(ValidationError, match="preferred batch sizes"):
        BatchingOptions(max_batch_size=8, preferred_batch_sizes=(4, 16))


@pytest.mark.parametrize("name", ["", "Classifier", "a/b", "-x", "x" * 65])
def test_model_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        check_model_name(name)


def test_versions_are_numbered_and_stored_in_triton_layout(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    repo = ModelRepository(store)
    assert repo.add_version("classifier", exported(b"a")) == 1
    assert repo.add_version("classifier", exported(b"b", image_size=48)) == 2
    assert repo.versions("classifier") == [1, 2]
    assert repo.models() == ["classifier"]
    assert (tmp_path / "models/classifier/2/model.onnx").read_bytes() == b"onnx:b"
    assert repo.eager_state("classifier", 1) == b"state:a"
    assert repo.contract("classifier", 2).preprocessing.image_size == 48
    assert repo.config_text("classifier") is None
    text = repo.write_config("classifier", [2], BatchingOptions(), default_kind="gpu")
    assert repo.config_text("classifier") == text and "versions: [ 2 ]" in text and "KIND_GPU" in text
    assert "dims: [ 3, 48, 48 ]" in text  # warm-up at the newest served version's size
    with pytest.raises(ObjectNotFound):
        repo.write_config("classifier", [3], BatchingOptions())
    with pytest.raises(ObjectNotFound):
        repo.contract("classifier", 7)


def test_repository_location_follows_the_store(tmp_path: Path) -> None:
    local = Settings(store="filesystem", store_root=tmp_path)
    assert repository_location(local) == str(tmp_path.resolve() / "models")
    s3 = Settings(store="s3", s3_endpoint="minio:9000", s3_bucket="dermasynth")
    assert repository_location(s3) == "s3://minio:9000/dermasynth/models"


def test_sync_mirrors_the_repository_and_drops_stale_files(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    repo = ModelRepository(store)
    repo.add_version("classifier", exported(b"a"))
    repo.write_config("classifier", [1], BatchingOptions())
    mirror = tmp_path / "mirror"
    stale = mirror / "old" / "1" / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    fetched = sync_repository(store, mirror)
    assert "models/classifier/1/model.onnx" in fetched
    assert (mirror / "classifier/1/model.onnx").read_bytes() == b"onnx:a"
    assert (mirror / "classifier/config.pbtxt").is_file()
    assert not stale.exists()
    again = sync_repository(store, mirror)
    assert "models/classifier/1/model.onnx" not in again  # unchanged files are not fetched twice
