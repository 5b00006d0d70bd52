"""DistributedDataParallel on 2 CPU processes (gloo): through the library and through torchrun + the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.engine import fit
from dermasynth.data.manifest import Manifest
from dermasynth.storage import FilesystemStore
from tests.conftest import free_port

CONFIG = TrainConfig(
    model="mobilenet_v3_small",
    image_size=16,
    epochs=2,
    batch_size=8,
    num_workers=0,
    max_steps_per_epoch=2,
    device="cpu",
)


def _rank(rank: int, world_size: int, port: int, data: str, tmp: str) -> None:
    os.environ.update(
        WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)  # as torchrun does for several processes per machine
    try:
        result = fit(CONFIG, Manifest.read(Path(data)), FilesystemStore(Path(tmp) / f"store{rank}"))
        (Path(tmp) / f"result{rank}.json").write_text(result.model_dump_json())
    finally:
        dist.destroy_process_group()


def test_ddp_trains_on_two_processes_and_only_rank_0_writes(demo_dataset: Manifest, tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, free_port(), str(demo_dataset.root), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(2)]
    for result in results:
        result.pop("wall_s")
    assert results[0] == results[1]  # gathered validation and all-reduced losses agree on every rank
    assert results[0]["world_size"] == 2 and results[0]["epochs_run"] == 2
    assert results[0]["data_path"] == "cache"  # decoded once by rank 0, augmented per batch and per rank
    assert all(h["train_images"] == 2 * 2 * 8 for h in results[0]["history"])  # 2 ranks x 2 steps x batch 8
    assert {p.name for p in (tmp_path / "store0").iterdir()} == {
        "best.pth",
        "checkpoint.pth",
        "epoch_001.pth",
        "epoch_002.pth",
        "result.json",
    }
    assert list((tmp_path / "store1").iterdir()) == []


def test_torchrun_launches_the_train_command(demo_dataset: Manifest, tmp_path: Path) -> None:
    dermasynth = Path(sys.executable).parent / "dermasynth"
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--no-python",
        str(dermasynth),
        "train",
        "--data",
        str(demo_dataset.root),
        "--out",
        str(out),
        "--model",
        "mobilenet_v3_small",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-steps-per-epoch",
        "2",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs_run"] == 1
