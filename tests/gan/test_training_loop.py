from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from dermasynth.data.manifest import Manifest, Record
from dermasynth.gan.artifacts import GanResult, generator_id, load_generator
from dermasynth.gan.sampling import generate
from dermasynth.gan.training_loop import GanTrainer, train_gan
from dermasynth.progress import Cancelled, Progress
from dermasynth.storage import FilesystemStore
from dermasynth.storage.state_dicts import LATEST, load_state
from tests.gan.conftest import tiny_config


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


def test_one_discriminator_step_and_one_generator_step_change_only_their_network() -> None:
    trainer = GanTrainer(tiny_config().resolved(), num_classes=3)
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    g0, d0, e0 = _params(trainer.generator), _params(trainer.discriminator), _params(trainer.generator_ema)

    trainer.discriminator_step(real, labels, step=0)
    assert _changed(d0, trainer.discriminator) == set(d0)  # every discriminator weight moved
    assert not _changed(g0, trainer.generator) and not _changed(e0, trainer.generator_ema)

    d1 = _params(trainer.discriminator)
    trainer.generator_step(labels)
    assert _changed(g0, trainer.generator) == set(g0)  # every generator weight moved
    assert not _changed(d1, trainer.discriminator) and not _changed(e0, trainer.generator_ema)

    trainer.update_ema(step=0)
    assert _changed(e0, trainer.generator_ema) == set(e0)


def test_train_gan_writes_options_checkpoints_snapshots_grids_and_result(tiny_gan: Path) -> None:
    store = FilesystemStore(tiny_gan)
    keys = set(store.list())
    result = GanResult.model_validate_json(store.get_bytes("result.json"))
    assert {
        "options.json",
        "checkpoint.pth",
        "generator.pth",
        "result.json",
        "stats.json",
        "snapshots/step-0000002.pth",
        "snapshots/step-0000004.pth",
    } <= keys
    for step in (2, 4):
        assert {f"grids/step-{step:07d}/{c}.png" for c in [*result.classes, "_all"]} <= keys
    grid = Image.open(io.BytesIO(store.get_bytes(f"grids/step-0000004/{result.classes[0]}.png")))
    assert grid.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2x2 images of 16 px, 2 px borders
    options = json.loads(store.get_bytes("options.json"))
    assert options["options"]["channel_base"] == 128 and options["options"]["r1_gamma"] > 0  # resolved
    assert sum(options["train_images"].values()) == sum(result.train_images.values()) > 0
    assert result.step == 4 and result.classes == sorted(result.train_images)
    assert result.generator_id == load_generator(store, "cpu").generator_id


def test_only_real_train_images_are_learned_from(demo_dataset: Manifest, tmp_path: Path) -> None:
    train = [r for r in demo_dataset.records if r.split == "train"]
    fake_synthetic = Record(
        image=train[0].image, label="vasc", lesion_id="SYN_1", split="train", source="synthetic", sha256=train[0].sha256
    )
    manifest = Manifest([r for r in demo_dataset.records if r is not train[0]] + [fake_synthetic], demo_dataset.root)
    result = train_gan(tiny_config(steps=1, classes=["nv", "vasc"]), manifest, FilesystemStore(tmp_path / "g"))
    expected = {
        c: sum(1 for r in manifest.records if r.split == "train" and r.source != "synthetic" and r.label == c)
        for c in ("nv", "vasc")
    }
    assert result.train_images == expected and result.classes == ["nv", "vasc"]
    with pytest.raises(ValueError, match=r"classes \['zzz'\] have no real images in the train split"):
        train_gan(tiny_config(classes=["nv", "zzz"]), manifest, FilesystemStore(tmp_path / "h"))


def test_resume_continues_from_the_saved_step_with_the_same_state(demo_dataset: Manifest, tmp_path: Path) -> None:
    straight = FilesystemStore(tmp_path / "straight")
    train_gan(tiny_config(steps=6), demo_dataset, straight)

    interrupted = FilesystemStore(tmp_path / "interrupted")
    seen: list[int] = []

    def cancel_at_3(p: Progress) -> None:
        seen.append(p.step or 0)
        if p.step == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        train_gan(tiny_config(steps=6), demo_dataset, interrupted, cancel_at_3)
    assert seen == [1, 2, 3] and load_state(interrupted, LATEST)["step"] == 3
    assert not interrupted.exists("result.json")

    with pytest.raises(FileExistsError, match="resume it"):
        train_gan(tiny_config(steps=6), demo_dataset, interrupted)
    with pytest.raises(ValueError, match="cannot resume with changed options: image_size=32"):
        train_gan(tiny_config(steps=6, image_size=32), demo_dataset, interrupted, resume=True)

    resumed_steps: list[int] = []
    result = train_gan(
        tiny_config(steps=6), demo_dataset, interrupted, lambda p: resumed_steps.append(p.step or 0), resume=True
    )
    assert resumed_steps == [4, 5, 6] and result.step == 6
    a, b = load_state(straight, LATEST), load_state(interrupted, LATEST)
    for part in ("generator", "discriminator", "generator_ema", "augment"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    assert result.generator_id == generator_id(a["generator_ema"])

    again = train_gan(tiny_config(steps=6), demo_dataset, interrupted, lambda p: pytest.fail("ran again"), resume=True)
    assert again == result


def _solid_dataset(root: Path, per_class: int = 24) -> Manifest:
    """Two trivially different classes: noisy solid red and noisy solid blue squares."""
    rng = np.random.default_rng(0)
    records = []
    for label, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            name = f"images/{label}_{i}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(buffer.getvalue())
            records.append(
                Record(
                    image=name,
                    label=label,
                    lesion_id=f"{label}_{i}",
                    split="train",
                    source="generated",
                    sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
                )
            )
    return Manifest(records, root)


def _mean_colour(images: torch.Tensor) -> np.ndarray:
    return images.float().mean(dim=[2, 3]).numpy()


def test_conditioning_makes_each_class_recognizable(tmp_path: Path) -> None:
    manifest = _solid_dataset(tmp_path / "data")
    config = tiny_config(
        steps=100,
        batch_size=16,
        checkpoint_every=100,
        snapshot_every=100,
        grid_every=100,
        log_every=50,
        lr_g=0.0025,
        lr_d=0.0004,
    )
    train_gan(config, manifest, FilesystemStore(tmp_path / "gan"))
    trained = load_generator(FilesystemStore(tmp_path / "gan"), "cpu")
    assert trained.classes == ["blue", "red"]

    real = torch.stack(
        [torch.from_numpy(np.array(Image.open(manifest.path_of(r)))).permute(2, 0, 1) for r in manifest.records]
    )
    real_labels = [trained.class_index(r.label) for r in manifest.records]
    classifier = LogisticRegression().fit(_mean_colour(real), real_labels)

    labels = [0] * 32 + [1] * 32
    fake = torch.cat(list(generate(trained.generator, labels, list(range(64)))))
    accuracy = (classifier.predict(_mean_colour(fake)) == np.array(labels)).mean()
    assert accuracy >= 0.9, f"generated classes are told apart only {accuracy:.0%} of the time (chance: 50%)"


@pytest.mark.gpu
def test_mixed_precision_training_on_cuda_at_gpu_resolutions(demo_dataset: Manifest, tmp_path: Path) -> None:
    for size in (128, 256):
        store = FilesystemStore(tmp_path / str(size))
        result = train_gan(tiny_config(image_size=size, device="cuda", amp=True, steps=3), demo_dataset, store)
        assert result.device.startswith("cuda") and result.step == 3
        assert all(np.isfinite(v) for v in result.final_stats.values())
        trained = load_generator(store, "cuda")
        (images,) = generate(trained.generator, [0, 1], [1, 2])
        assert images.shape == (2, 3, size, size)
