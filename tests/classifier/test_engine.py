from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dermasynth.classifier.checkpoint import RESULT, epoch_key
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.distributed import init_distributed
from dermasynth.classifier.engine import TrainResult, _Run, amp_dtype_of, evaluate, fit, train_one_epoch
from dermasynth.config import get_settings
from dermasynth.data.images import load_rgb
from dermasynth.data.manifest import Manifest
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import FilesystemStore
from dermasynth.storage.state_dicts import load_state

# A small, fast network keeps these tests about the engine; every documented backbone is covered in test_models.
TINY = {
    "model": "mobilenet_v3_small",
    "image_size": 16,
    "batch_size": 8,
    "num_workers": 0,
    "device": "cpu",
    "max_steps_per_epoch": 2,
}


def _config(**changes: object) -> TrainConfig:
    return TrainConfig.model_validate({**TINY, "epochs": 2, **changes})


def _weights(store: FilesystemStore, key: str = "checkpoint.pth") -> dict[str, torch.Tensor]:
    return load_state(store, key)["model"]


def test_fit_trains_validates_checkpoints_and_reports(demo_dataset: Manifest, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "run")
    seen: list[Progress] = []
    result = fit(_config(), demo_dataset, store, seen.append)
    assert store.list() == ["best.pth", "checkpoint.pth", "epoch_001.pth", "epoch_002.pth", RESULT]
    assert result.epochs_run == 2 and len(result.history) == 2 and not result.stopped_early
    assert result.classes == demo_dataset.classes
    assert result.train_counts == demo_dataset.class_counts("train")
    assert result.val_images == len(demo_dataset.in_split("val"))
    assert 1 <= result.best_epoch <= 2
    assert result.best_val_balanced_accuracy == max(h.val_balanced_accuracy for h in result.history)
    assert all(h.train_images == 16 and h.images_per_s > 0 and h.val_loss > 0 for h in result.history)
    assert TrainResult.model_validate_json(store.get_bytes(RESULT)) == result
    train_steps = [p for p in seen if p.phase == "train"]
    assert [(p.epoch, p.step) for p in train_steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert train_steps[-1].eta_s == 0 and train_steps[-1].loss is not None
    assert [p.epoch for p in seen if p.phase == "validate"] == [1, 2]
    assert "val_balanced_accuracy" in seen[-1].metrics
    checkpoint = load_state(store, "checkpoint.pth")
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "best_metric",
        "config",
        "classes",
        "preprocessing",
        "rng",
    } <= checkpoint.keys()
    assert checkpoint["epoch"] == 2 and checkpoint["preprocessing"]["image_size"] == 16


def test_interrupted_run_resumed_ends_with_the_same_weights(demo_dataset: Manifest, tmp_path: Path) -> None:
    config = _config(epochs=3, deterministic=True)
    straight = FilesystemStore(tmp_path / "straight")
    expected = fit(config, demo_dataset, straight)

    def cancel_after_epoch_2(progress: Progress) -> None:
        if progress.phase == "validate" and progress.epoch == 2:
            raise Cancelled("user cancelled")

    interrupted = FilesystemStore(tmp_path / "interrupted")
    with pytest.raises(Cancelled):
        fit(config, demo_dataset, interrupted, cancel_after_epoch_2)
    assert not interrupted.exists(RESULT) and load_state(interrupted, "checkpoint.pth")["epoch"] == 2
    resumed = fit(config, demo_dataset, interrupted, resume=True)
    assert expected.data_path == resumed.data_path == "cache"  # decoded once, augmented per batch, seeded per step
    final, reference = _weights(interrupted), _weights(straight)
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    assert resumed.history[-1].val_loss == expected.history[-1].val_loss
    assert resumed.best_epoch == expected.best_epoch


def test_finished_run_is_not_trained_again(demo_dataset: Manifest, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "run")
    first = fit(_config(epochs=1), demo_dataset, store)

    def must_not_run(progress: Progress) -> None:
        raise AssertionError(f"trained again: {progress}")

    assert fit(_config(epochs=1), demo_dataset, store, must_not_run, resume=True) == first
    with pytest.raises(FileExistsError, match="already holds a training run"):
        fit(_config(epochs=1), demo_dataset, store)


def test_resume_refuses_other_options(demo_dataset: Manifest, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "run")

    def stop(progress: Progress) -> None:
        if progress.phase == "validate":
            raise Cancelled

    with pytest.raises(Cancelled):
        fit(_config(), demo_dataset, store, stop)
    with pytest.raises(ValueError, match=r"differing: lr \(run: 0.001, now: 0.01\)"):
        fit(_config(lr=0.01), demo_dataset, store, resume=True)
    result = fit(_config(num_workers=1), demo_dataset, store, resume=True)  # runtime options may change
    assert result.epochs_run == 2


def test_cancel_mid_epoch_keeps_the_last_checkpoint(demo_dataset: Manifest, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "run")

    def cancel_in_epoch_2(progress: Progress) -> None:
        if progress.phase == "train" and progress.epoch == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        fit(_config(), demo_dataset, store, cancel_in_epoch_2)
    assert load_state(store, "checkpoint.pth")["epoch"] == 1
    assert not store.exists(epoch_key(2))


def test_early_stopping_on_val_balanced_accuracy(demo_dataset: Manifest, tmp_path: Path) -> None:
    # a learning rate too small to change any prediction: the first epoch stays the best
    result = fit(
        _config(epochs=5, lr=1e-12, patience=2, schedule="none"), demo_dataset, FilesystemStore(tmp_path / "run")
    )
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


@pytest.mark.parametrize(
    "options",
    [
        {"balance": "loss", "optimizer": "sgd", "schedule": "plateau", "label_smoothing": 0.1, "grad_clip": 1.0},
        {"balance": "none", "optimizer": "adamw", "amp": True, "channels_last": True},
    ],
)
def test_option_combinations_train(demo_dataset: Manifest, tmp_path: Path, options: dict[str, object]) -> None:
    result = fit(_config(epochs=1, **options), demo_dataset, FilesystemStore(tmp_path / "run"))
    assert result.epochs_run == 1 and result.history[0].train_loss > 0
    assert result.amp_dtype == ("bfloat16" if options.get("amp") else None)


def test_synthetic_rows_train_and_count(demo_dataset: Manifest, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(demo_dataset.root, root)
    rare = [r for r in demo_dataset.in_split("train") if r.label == "df"]
    synthetic = []
    for i, record in enumerate(rare * 3):
        name = f"synthetic/df_{i}.png"
        (root / "synthetic").mkdir(exist_ok=True)
        shutil.copy(root / record.image, root / name)
        synthetic.append(
            replace(
                record, image=name, source="synthetic", lesion_id=f"SYN_{i}", generator="g1", seed=i, truncation=1.0
            )
        )
    manifest = Manifest(demo_dataset.records, root).with_records(synthetic)
    result = fit(_config(epochs=1), manifest, FilesystemStore(tmp_path / "run"))
    assert result.train_sources["synthetic"] == len(synthetic)
    assert result.train_counts["df"] == len(rare) + len(synthetic)


def test_bad_inputs_are_refused(demo_dataset: Manifest, tmp_path: Path) -> None:
    no_val = Manifest([r for r in demo_dataset.records if r.split != "val"], demo_dataset.root)
    with pytest.raises(ValueError, match="val split holds no images"):
        fit(_config(), no_val, FilesystemStore(tmp_path / "a"))
    with pytest.raises(ValueError, match="cannot take 16 px"):
        fit(_config(model="vgg16", image_size=16), demo_dataset, FilesystemStore(tmp_path / "b"))
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        amp_dtype_of(_config(amp=True, amp_dtype="fp16"), torch.device("cpu"))


def test_train_one_epoch_steps_once_per_batch_with_amp_and_clipping() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    loader = DataLoader(TensorDataset(torch.randn(20, 3, 2, 2), torch.randint(0, 3, (20,))), batch_size=6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps: list[int] = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    calls: list[tuple[int, float, int]] = []
    stats = train_one_epoch(
        model,
        loader,
        nn.CrossEntropyLoss(),
        optimizer,
        torch.amp.GradScaler("cpu", enabled=False),
        torch.device("cpu"),
        amp_dtype=torch.bfloat16,
        grad_clip=0.5,
        log_every=2,
        on_step=lambda *a: calls.append(a),
    )
    assert len(steps) == 4 == stats.steps and stats.images == 20
    assert [c[0] for c in calls] == [1, 2, 3, 4] and [c[2] for c in calls] == [6, 12, 18, 20]
    assert calls[-1][1] == pytest.approx(stats.loss)
    targets, probs = evaluate(model, loader, torch.device("cpu"), tta=True)
    assert targets.shape == (20,) and probs.shape == (20, 3)
    assert probs.sum(axis=1) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.gpu
def test_fp16_with_grad_scaler_on_cuda(demo_dataset: Manifest, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "run")
    result = fit(_config(epochs=1, amp=True, device="cuda", channels_last=True), demo_dataset, store)
    assert result.amp_dtype == "float16" and result.device.startswith("cuda")
    assert load_state(store, "checkpoint.pth")["scaler"]["scale"] > 0


def test_per_image_path_still_trains_and_says_so(demo_dataset: Manifest, tmp_path: Path) -> None:
    result = fit(_config(epochs=1, data_path="per_image"), demo_dataset, FilesystemStore(tmp_path / "run"))
    assert result.data_path == "per_image" and result.history[0].train_images == 16


def test_cache_over_budget_falls_back_to_the_per_image_path(
    demo_dataset: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERMASYNTH_DECODED_CACHE_MAX_BYTES", "1000")
    get_settings.cache_clear()
    try:
        result = fit(_config(epochs=1), demo_dataset, FilesystemStore(tmp_path / "a"), cache_root=tmp_path / "c")
        assert result.data_path == "per_image"
        with pytest.raises(ValueError, match="data_path 'cache'"):
            fit(
                _config(epochs=1, data_path="cache"),
                demo_dataset,
                FilesystemStore(tmp_path / "b"),
                cache_root=tmp_path / "c",
            )
    finally:
        monkeypatch.delenv("DERMASYNTH_DECODED_CACHE_MAX_BYTES")
        get_settings.cache_clear()


def test_validation_batches_are_the_eval_transform_never_augmented(demo_dataset: Manifest, tmp_path: Path) -> None:
    config = _config(epochs=1)
    run = _Run(config, demo_dataset, FilesystemStore(tmp_path / "run"), init_distributed("cpu"), None)
    prepare = run._prepare_eval()
    assert prepare is not None
    eval_tf = run.preprocessing.eval_transform()
    for _ in range(2):  # the same every time: nothing random
        seen = [prepare(batch, step) for step, batch in enumerate(run.val_loader)]
        inputs = torch.cat([x for x, _ in seen])
        targets = torch.cat([t for _, t in seen])
        expected = torch.stack([eval_tf(load_rgb(demo_dataset.path_of(r))) for r in run.val_records])
        assert torch.allclose(inputs, expected, atol=1e-5)
        assert targets.tolist() == [demo_dataset.classes.index(r.label) for r in run.val_records]
    # training batches are augmented: two epochs' first batches differ even for the same images
    train_prepare = [run._prepare(epoch) for epoch in (0, 1)]
    batch = next(iter(run.loader))
    a, labels = train_prepare[0](batch, 0)  # type: ignore[misc]
    b, _ = train_prepare[1](batch, 0)  # type: ignore[misc]
    assert a.shape == (8, 3, 16, 16) and not torch.equal(a, b) and torch.equal(labels, batch[2])
