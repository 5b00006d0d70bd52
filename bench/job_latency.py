"""Job submission and queue pickup latency of the platform, on loopback.

Starts a real stack on this machine (a uvicorn gateway, then a Celery worker; Redis must be running),
on a filesystem store in a temporary folder and a Redis key prefix of its own (deleted afterwards):

* submit latency: ``POST /v1/jobs`` until the 202 answer with the job ``queued`` (its record in Redis
  and its message on the queue), measured by the client, ``--submits`` times in a row, no worker running;
* pickup latency: from the job's ``created_at`` (gateway) to its ``started_at`` (the worker moved it to
  ``running``), for ``--pickups`` jobs sent one at a time to an idle worker (each is then cancelled
  through the API, and the next is sent once it has stopped).

    flock /tmp/dermasynth-bench.lock python bench/job_latency.py
    python bench/job_latency.py --submits 500 --pickups 30 --redis-url redis://127.0.0.1:6379/11
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.demo import make_demo_dataset
from dermasynth.storage import FilesystemStore

REPO = Path(__file__).resolve().parents[1]
PEPPER = "bench-pepper"
TRAINING = {"model": "mobilenet_v3_small", "image_size": 16, "epochs": 50, "batch_size": 16, "num_workers": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(max(ms), 2),
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"gave up waiting for {what}")


class Stack:
    """The processes this benchmark starts, and the Redis keys it makes."""

    def __init__(self, redis_url: str, root: Path) -> None:
        self.redis_url, self.root = redis_url, root
        self.prefix = f"bench-{uuid.uuid4().hex[:10]}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "DERMASYNTH_REDIS_URL": redis_url,
            "DERMASYNTH_JOB_KEY_PREFIX": self.prefix,
            "DERMASYNTH_STORE": "filesystem",
            "DERMASYNTH_STORE_ROOT": str(root / "store"),
            "DERMASYNTH_CACHE_ROOT": str(root / "cache"),
            "DERMASYNTH_API_KEY_PEPPER": PEPPER,
            "DERMASYNTH_WORKER_METRICS_PORT": "0",
            "DERMASYNTH_GATEWAY_INTERNAL_PORT": "0",
            "DERMASYNTH_LOG_LEVEL": "WARNING",
            "OMP_WAIT_POLICY": "PASSIVE",
        }

    def spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args,
            cwd=REPO,
            env=self.env,
            stdout=(self.root / log).open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
            client.delete(key)


def pickup_once(api: httpx.Client, body: dict[str, Any]) -> float:
    """Send one job to the idle worker; return started_at - created_at; cancel it and wait until it stopped."""
    job_id = api.post("/v1/jobs", json=body).json()["id"]
    record: dict[str, Any] = {}

    def started() -> bool:
        record.update(api.get(f"/v1/jobs/{job_id}").json())
        return record["state"] != "queued"

    wait_for(started, 120, f"job {job_id} to start", interval=0.005)
    api.post(f"/v1/jobs/{job_id}/cancel")
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled", 300, "the job to stop")
    delay = datetime.fromisoformat(record["started_at"]) - datetime.fromisoformat(record["created_at"])
    return delay.total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=300, help="jobs submitted for the submit latency")
    parser.add_argument("--pickups", type=int, default=20, help="jobs sent one by one for the pickup latency")
    parser.add_argument(
        "--redis-url", default=os.environ.get("DERMASYNTH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dermasynth-bench-") as work:
        stack = Stack(args.redis_url, Path(work))
        try:
            registry = DatasetCatalog(FilesystemStore(Path(work) / "store"), Path(work) / "cache-bench")
            demo = make_demo_dataset(Path(work) / "demo", count=70, size=32, seed=0)
            dataset = registry.publish(demo.root, name="bench", origin="local")
            token = (
                RedisApiKeyStore(redis.Redis.from_url(args.redis_url), PEPPER, stack.prefix)
                .create("bench", [Scope.ENGINEER])
                .token
            )
            port = free_port()
            stack.spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "services.gateway.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                "gateway.log",
            )
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )

            def gateway_up() -> bool:
                try:
                    return api.get("/v1/health/live").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(gateway_up, 180, "the gateway")
            body: dict[str, Any] = {
                "kind": "training",
                "params": {"dataset_id": dataset.id, "config": TRAINING, "evaluate_split": None},
            }
            for _ in range(10):  # warm-up: connections, imports, first-request paths
                api.post("/v1/jobs", json=body).raise_for_status()
            submit: list[float] = []
            for _ in range(args.submits):
                started = time.perf_counter()
                response = api.post("/v1/jobs", json=body)
                submit.append(time.perf_counter() - started)
                assert response.status_code == 202 and response.json()["state"] == "queued", response.text
            for job in api.get("/v1/jobs", params={"state": "queued", "limit": 500}).json()["jobs"]:
                api.post(f"/v1/jobs/{job['id']}/cancel")  # the backlog is cancelled: the worker skips it
            queued = redis.Redis.from_url(args.redis_url).llen(f"{stack.prefix}:celery:train")

            stack.spawn(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "services.worker.celery_app",
                    "worker",
                    "--pool=solo",
                    "-Q",
                    "train",
                    "-n",
                    f"bench-{stack.prefix}@%h",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ],
                "worker.log",
            )
            wait_for(
                lambda: redis.Redis.from_url(args.redis_url).llen(f"{stack.prefix}:celery:train") == 0,
                300,
                "the worker to drain the cancelled backlog",
                interval=0.5,
            )
            pickup = [pickup_once(api, body) for _ in range(args.pickups + 1)][1:]  # the first one warms up
            print(
                json.dumps(
                    {
                        "submit_latency": summary(submit),
                        "queue_pickup_latency": summary(pickup),
                        "backlog_cancelled": queued,
                        "loadavg": [round(x, 2) for x in os.getloadavg()],
                        "cpus": os.cpu_count(),
                    },
                    indent=2,
                )
            )
        finally:
            stack.close()


if __name__ == "__main__":
    main()
