"""Faults against a local stack, with the production defaults: what each loses and how long it takes to
recover; then predictions from 32 concurrent clients for 60 s.

Everything runs on this machine, started here and stopped at the end:

* a ``redis-server`` of its own (AOF on, ``appendfsync always``; broker and job store) on a free port;
* the jobs' object store: S3 (moto's server) behind a TCP proxy that the store-outage fault cuts;
* two Celery workers (solo pool, production leases, visibility timeout and grace period);
* serving: a tritonserver (nvidia-pytriton binary, dynamic batching) with a ``--model`` exported at
  ``--image-size`` px, and a uvicorn gateway in front of it (predictions; its model store is a folder).

Faults, one after the other: ``kill -9`` of the worker running a training job; SIGTERM of the worker
running one (a scale-down); Redis restarted with jobs running and queued; the object store unreachable
for ``--outage-s`` mid-job; Triton killed with ``kill -9`` and started again while clients predict. For
each: jobs (or requests) lost, epochs trained twice, and the recovery time. Then the load test: errors,
p50/p95/p99 latency and the batch sizes Triton ran (its ``/v2/models/{name}/stats``).

    flock /tmp/dermasynth-bench.lock .venv/bin/python bench/faults.py
    .venv/bin/python bench/faults.py --skip kill9,load --load-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx
import torch
from moto.server import ThreadedMotoServer

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.classifier.config import TrainConfig
from dermasynth.classifier.models import build_model
from dermasynth.config import Settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.transforms import Preprocessing
from dermasynth.jobs import JobKind, JobRecord, JobState, RedisJobStore
from dermasynth.jobs.params import TrainingParams
from dermasynth.jobs.queues import CeleryDispatcher, make_celery
from dermasynth.jobs.submission import submit_job
from dermasynth.serving.export import export_classifier
from dermasynth.serving.inference_client import TritonClient
from dermasynth.serving.model_repository import BatchingOptions
from dermasynth.serving.registry import Deployer, ModelRegistry
from dermasynth.serving.schemas import ModelLineage
from dermasynth.storage import FilesystemStore, open_store
from services.inference.launcher import LocalTriton, free_port
from tests.services.worker.faults import OwnRedis, TcpProxy

REPO = Path(__file__).resolve().parents[1]
PEPPER = "bench-pepper"
MODEL = "classifier"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"gave up waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Row:
    fault: str
    lost: str
    recovery: str
    note: str = ""


class Stack:
    """The bench's processes, servers and clients."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root, self.args = root, args
        self.redis = OwnRedis(root / "redis").start()
        self.moto_port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self.moto.start()
        self.proxy = TcpProxy(self.moto_port).__enter__()
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "DERMASYNTH_REDIS_URL": self.redis.url,
            "DERMASYNTH_JOB_KEY_PREFIX": self.prefix,
            "DERMASYNTH_STORE": "s3",
            "DERMASYNTH_S3_ENDPOINT": f"127.0.0.1:{self.proxy.port}",
            "DERMASYNTH_S3_BUCKET": "bench",
            "DERMASYNTH_S3_ACCESS_KEY": "bench",
            "DERMASYNTH_S3_SECRET_KEY": "bench-secret",
            "DERMASYNTH_API_KEY_PEPPER": PEPPER,
            "DERMASYNTH_WORKER_METRICS_PORT": "0",
            "DERMASYNTH_GATEWAY_INTERNAL_PORT": "0",
            "DERMASYNTH_LOG_LEVEL": "INFO",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.settings = Settings(
            redis_url=self.redis.url,
            job_key_prefix=self.prefix,
            store="s3",
            s3_endpoint=f"127.0.0.1:{self.proxy.port}",
            s3_bucket="bench",
            s3_access_key="bench",
            s3_secret_key="bench-secret",
            cache_root=root / "cache-bench",
            api_key_pepper=PEPPER,
        )
        self.jobs = RedisJobStore.from_url(self.redis.url, self.prefix)
        self.registry = DatasetCatalog(open_store(self.settings), self.settings.cache_root)
        self.dispatcher = CeleryDispatcher(make_celery(self.settings))
        self.triton: LocalTriton | None = None

    def spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args,
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=(self.root / log).open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = f"worker-{name}.log"
        process = self.spawn(
            [
                *(sys.executable, "-m", "celery", "-A", "services.worker.celery_app", "worker", "--pool=solo"),
                *("-Q", "gan,train,default", "-n", f"{name}@%h", "--without-heartbeat", "--without-gossip"),
                *("--without-mingle", "-l", "INFO"),
            ],
            log,
            {
                "DERMASYNTH_CACHE_ROOT": str(self.root / f"cache-{name}"),
                "DERMASYNTH_WORKER_LIVENESS_FILE": str(self.root / f"{name}.alive"),
            },
        )
        wait_for(lambda: b" ready." in (self.root / log).read_bytes(), 180, f"worker {name}", 0.5)
        self.workers[name] = process
        return process

    def submit(self, dataset_id: str, epochs: int) -> JobRecord:
        config = TrainConfig(model="mobilenet_v3_small", image_size=16, batch_size=16, num_workers=0, epochs=epochs)
        params = TrainingParams(dataset_id=dataset_id, config=config, evaluate_split=None)
        return submit_job(
            JobKind.TRAINING, params, owner="bench", jobs=self.jobs, dispatcher=self.dispatcher, registry=self.registry
        )

    def holder(self, job_id: str) -> str:
        return str(self.jobs.get(job_id).worker).split("@", 1)[0]

    def epoch(self, job_id: str) -> int:
        progress = self.jobs.get(job_id).progress
        return (progress.epoch or 0) if progress is not None else 0

    def retrained(self, job_id: str) -> int:
        """Epochs validated (so trained to their end) more than once, from the job's log."""
        seen: dict[str, int] = {}
        for line in self.jobs.logs(job_id).lines:
            if "phase validate; epoch " in line:
                epoch = line.split("phase validate; epoch ", 1)[1].split(";", 1)[0]
                seen[epoch] = seen.get(epoch, 0) + 1
        return sum(n - 1 for n in seen.values())

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if self.triton is not None:
            self.triton.stop()
        self.proxy.__exit__()
        self.moto.stop()
        self.redis.stop()


def kill9(stack: Stack, dataset_id: str) -> Row:
    job = stack.submit(dataset_id, epochs=12)
    wait_for(lambda: stack.epoch(job.id) >= 3, 300, "epoch 3")
    name = stack.holder(job.id)
    os.killpg(stack.workers[name].pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: stack.jobs.get(job.id).attempts >= 2, 600, "the job to restart elsewhere", 0.2)
    recovered = time.monotonic() - killed
    wait_for(lambda: stack.jobs.get(job.id).terminal, 600, "the job to finish")
    record = stack.jobs.get(job.id)
    redone = stack.retrained(job.id)
    stack.start_worker(f"{name}-replacement")
    return Row(
        "worker kill -9 mid-training",
        f"job {record.state.value}; {redone} checkpointed epochs re-trained",
        f"{recovered:.0f} s to resume on another worker",
        f"lease {stack.settings.job_lease_s} s, sweep every {stack.settings.job_lease_s / 3:.0f} s",
    )


def sigterm(stack: Stack, dataset_id: str) -> Row:
    job = stack.submit(dataset_id, epochs=12)
    wait_for(lambda: stack.epoch(job.id) >= 3, 300, "epoch 3")
    name = stack.holder(job.id)
    process = stack.workers.pop(name)
    os.killpg(process.pid, signal.SIGTERM)
    sent = time.monotonic()
    process.wait(timeout=stack.settings.worker_shutdown_grace_s + 30)
    exited = time.monotonic() - sent
    wait_for(lambda: stack.jobs.get(job.id).attempts >= 2, 300, "the job to restart elsewhere", 0.1)
    resumed = time.monotonic() - sent
    wait_for(lambda: stack.jobs.get(job.id).terminal, 600, "the job to finish")
    stack.start_worker(f"{name}-replacement")
    return Row(
        "worker SIGTERM mid-training",
        f"job {stack.jobs.get(job.id).state.value}; {stack.retrained(job.id)} epochs re-trained",
        f"worker exited in {exited:.1f} s (grace {stack.settings.worker_shutdown_grace_s} s); "
        f"resumed elsewhere {resumed:.1f} s after SIGTERM",
    )


def redis_restart(stack: Stack, dataset_id: str) -> Row:
    jobs = [stack.submit(dataset_id, epochs=8) for _ in range(3)]  # two running, one queued
    wait_for(lambda: max(stack.epoch(j.id) for j in jobs) >= 2, 300, "a job's second epoch")
    states = [stack.jobs.get(j.id).state.value for j in jobs]
    down = stack.redis.restart(down_s=2.0)
    restarted = time.monotonic()
    wait_for(lambda: all(stack.jobs.get(j.id).terminal for j in jobs), 900, "the jobs to finish", 0.5)
    records = [stack.jobs.get(j.id) for j in jobs]
    lost = sum(1 for r in records if r.state != JobState.SUCCEEDED)
    return Row(
        "Redis restart (AOF) with jobs " + "/".join(states),
        f"{lost} of {len(jobs)} jobs lost; attempts {[r.attempts for r in records]}",
        f"down {down:.1f} s; all finished {time.monotonic() - restarted:.0f} s after",
    )


def store_outage(stack: Stack, dataset_id: str, outage_s: float) -> Row:
    job = stack.submit(dataset_id, epochs=10)
    wait_for(lambda: stack.epoch(job.id) >= 2, 300, "epoch 2")
    stack.proxy.cut()
    time.sleep(outage_s)
    stack.proxy.restore()
    restored = time.monotonic()
    epoch = stack.epoch(job.id)
    wait_for(lambda: stack.jobs.get(job.id).terminal or stack.epoch(job.id) > epoch, 600, "progress after the outage")
    progressing = time.monotonic() - restored
    wait_for(lambda: stack.jobs.get(job.id).terminal, 600, "the job to finish")
    record = stack.jobs.get(job.id)
    retries = [line for line in stack.jobs.logs(job.id).lines if "transient error" in line]
    return Row(
        f"object store unreachable {outage_s:.0f} s mid-job",
        f"job {record.state.value} after {len(retries)} retries (attempts {record.attempts})",
        f"progress again {progressing:.0f} s after the store came back",
        "Celery backoff 5 s doubling, full jitter",
    )


async def predict_loop(
    url: str, token: str, images: list[bytes], clients: int, seconds: float
) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def client(index: int) -> None:
            i = index
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    response = await http.post(
                        "/v1/predictions",
                        files={"images": (f"{i}.png", images[i % len(images)], "image/png")},
                        headers={"X-API-Key": token},
                    )
                    code = response.status_code
                except httpx.HTTPError:
                    code = 0
                statuses[code] = statuses.get(code, 0) + 1
                if code == 200:
                    latencies.append(time.perf_counter() - started)
                i += clients

        await asyncio.gather(*(client(c) for c in range(clients)))
    return latencies, statuses


def triton_batches(url: str) -> dict[int, int]:
    stats = httpx.get(f"http://{url}/v2/models/{MODEL}/stats", timeout=10).json()
    counts: dict[int, int] = {}
    for model in stats.get("model_stats", []):
        for batch in model.get("batch_stats", []):
            counts[int(batch["batch_size"])] = counts.get(int(batch["batch_size"]), 0) + int(
                batch["compute_infer"]["count"]
            )
    return counts


def start_serving(stack: Stack, args: argparse.Namespace) -> tuple[str, str, list[bytes]]:
    size = args.image_size
    calibration = make_demo_dataset(stack.root / "calibration", count=70, size=size, seed=0)
    torch.manual_seed(0)
    model = build_model(args.model, len(calibration.classes)).eval()
    exported = export_classifier(model, args.model, calibration.classes, Preprocessing(image_size=size), calibration)
    serving = FilesystemStore(stack.root / "serving")
    registry = ModelRegistry(serving)
    version = registry.register(MODEL, exported, ModelLineage(run="bench")).version
    stack.triton = LocalTriton(str(serving.root / "models"), stack.root / "triton").start()

    async def deploy() -> None:
        assert stack.triton is not None
        client = TritonClient(stack.triton.url)
        try:
            options = BatchingOptions(max_batch_size=32, preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=2000)
            await Deployer(registry, client).deploy(MODEL, version, options)
        finally:
            await client.close()

    asyncio.run(deploy())
    port = free_port()
    stack.spawn(
        [
            *(sys.executable, "-m", "uvicorn", "services.gateway.app:create_app", "--factory", "--port", str(port)),
            *("--log-level", "warning", "--no-access-log"),
        ],
        "gateway.log",
        {
            "DERMASYNTH_STORE": "filesystem",
            "DERMASYNTH_STORE_ROOT": str(serving.root),
            "DERMASYNTH_TRITON_URL": stack.triton.url,
            "DERMASYNTH_LOG_LEVEL": "WARNING",
            "DERMASYNTH_CACHE_ROOT": str(stack.root / "cache-gateway"),
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{url}/v1/health/live"), 180, "the gateway", 0.5)
    token = RedisApiKeyStore(stack.jobs.redis, PEPPER, stack.prefix).create("bench", [Scope.CLINICIAN]).token
    images = [path.read_bytes() for path in sorted((calibration.root).rglob("*.png"))[:64]]
    return url, token, images


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def triton_restart(stack: Stack, url: str, token: str, images: list[bytes]) -> Row:
    assert stack.triton is not None
    triton, process = stack.triton, stack.triton.process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    killed = time.monotonic()
    down = httpx.post(
        f"{url}/v1/predictions", files={"images": ("a.png", images[0], "image/png")}, headers={"X-API-Key": token}
    )
    triton.process = None
    triton.start()
    started = time.monotonic()
    answered = 0

    def serves() -> bool:
        nonlocal answered
        response = httpx.post(
            f"{url}/v1/predictions",
            files={"images": ("a.png", images[0], "image/png")},
            headers={"X-API-Key": token},
            timeout=30,
        )
        answered += 1
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    wait_for(serves, 180, "predictions after the Triton restart", 0.2)
    reason = down.json().get("reason")
    return Row(
        "Triton kill -9, then started again",
        f"no gateway restart; while down: {down.status_code} {reason} ({down.headers['content-type']})",
        f"answering {time.monotonic() - started:.1f} s after Triton was started again "
        f"(down {started - killed:.1f} s in all before that)",
        "the gateway's upkeep reloads the live version",
    )


def load(url: str, token: str, images: list[bytes], stack: Stack, clients: int, seconds: float) -> dict[str, Any]:
    assert stack.triton is not None
    before = triton_batches(stack.triton.url)
    latencies, statuses = asyncio.run(predict_loop(url, token, images, clients, seconds))
    after = triton_batches(stack.triton.url)
    batches = {size: after.get(size, 0) - before.get(size, 0) for size in sorted(after)}
    ms = [v * 1000 for v in latencies]
    executions = sum(batches.values())
    return {
        "requests": sum(statuses.values()),
        "errors": sum(n for code, n in statuses.items() if code != 200),
        "statuses": statuses,
        "throughput_per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p95_ms": round(percentile(ms, 95), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "triton_batches": {size: n for size, n in batches.items() if n},
        "mean_batch": round(sum(s * n for s, n in batches.items()) / executions, 2) if executions else None,
    }


def attempt(name: str, fault: Callable[[], Row]) -> Row:
    """Run one fault; a fault that could not be measured is a row saying why (the others still run)."""
    try:
        return fault()
    except Exception as exc:  # report it in the table rather than lose the other figures
        return Row(name, "NOT MEASURED", f"{type(exc).__name__}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip", default="", help="comma list of: kill9, sigterm, redis, store, triton, load")
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    skip = set(filter(None, args.skip.split(",")))
    load_before = os.getloadavg()
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dermasynth-bench-faults-") as work:
        stack = Stack(Path(work), args)
        try:
            demo = make_demo_dataset(Path(work) / "demo", count=140, size=32, seed=7)
            dataset_id = stack.registry.publish(demo.root, name="demo", origin="local", owner="bench").id
            if not {"kill9", "sigterm", "redis", "store"} <= skip:
                stack.start_worker("w1")
                stack.start_worker("w2")
            for name, fault in (
                ("kill9", lambda: kill9(stack, dataset_id)),
                ("sigterm", lambda: sigterm(stack, dataset_id)),
                ("redis", lambda: redis_restart(stack, dataset_id)),
                ("store", lambda: store_outage(stack, dataset_id, args.outage_s)),
            ):
                if name not in skip:
                    rows.append(attempt(name, fault))
                    print(rows[-1], flush=True)
            if not {"triton", "load"} <= skip:
                url, token, images = start_serving(stack, args)
                if "load" not in skip:
                    figures = load(url, token, images, stack, args.clients, args.load_seconds)
                    print(figures, flush=True)
                if "triton" not in skip:
                    rows.append(attempt("triton", lambda: triton_restart(stack, url, token, images)))
                    print(rows[-1], flush=True)
        finally:
            stack.close()
    print(f"\nCPU: {_cpu()}; load before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}\n")
    print("| fault | lost | recovery | note |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.fault} | {row.lost} | {row.recovery} | {row.note} |")
    if figures:
        print(
            f"\npredictions, {args.clients} clients for {args.load_seconds:.0f} s "
            f"({args.model} at {args.image_size} px): {figures['requests']} requests, "
            f"{figures['errors']} errors {figures['statuses']}, "
            f"{figures['throughput_per_s']}/s, p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
            f"p99 {figures['p99_ms']} ms; Triton batches {figures['triton_batches']} (mean {figures['mean_batch']})"
        )


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
