"""Inference throughput and latency: the gateway through Triton (with and without explanations) vs a
direct Triton client vs a naive server vs the model alone in this process (eager, TorchScript and
onnxruntime), side by side in one run.

Everything runs on this machine: a tritonserver (the nvidia-pytriton binary) serving the exported
ONNX model with dynamic batching through the onnxruntime Python backend, a uvicorn gateway
(``POST /v1/predictions``, API key checked in Redis, calibrated probabilities and conformal sets;
``explain=true`` adds the class activation map the graph outputs, drawn as a PNG), and a
single-threaded Flask server that runs the eager model once per request (bench/naive_server.py).
The model is ``--model`` at ``--image-size`` px with random weights (speed does not depend on them),
exported with an OOD score calibrated on a small generated dataset. Requests carry one image each:
real HAM10000 JPEGs when ``../shared/data/ham10000_200x150`` is there, else generated PNGs. The direct
Triton client sends already resized uint8 pixels (no decoding); the gateway and the naive server get
the encoded image. Each figure is a closed loop of ``c`` concurrent clients for ``--seconds``.

    flock /tmp/dermasynth-bench.lock .venv/bin/python bench/inference.py
    .venv/bin/python bench/inference.py --seconds 5 --queue-delay-us 2000 --threads 2 --instances 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on 2 shared cores a spinning thread starves the other
# processes (the servers, the client). Set before torch starts; the servers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import aiohttp
import httpx
import numpy as np
import torch

from dermasynth.classifier.models import build_model
from dermasynth.data.demo import make_demo_dataset
from dermasynth.data.images import load_rgb
from dermasynth.data.transforms import Preprocessing
from dermasynth.serving.contract import INPUT_NAME
from dermasynth.serving.export import build_serving_module, export_classifier, onnx_session
from dermasynth.serving.inference_client import TritonClient
from dermasynth.serving.model_repository import BatchingOptions
from dermasynth.serving.registry import Deployer, ModelRegistry
from dermasynth.serving.schemas import ModelLineage
from dermasynth.storage import FilesystemStore
from services.inference.launcher import LocalTriton, free_port

REPO = Path(__file__).resolve().parents[1]
HAM = REPO.parent / "shared" / "data" / "ham10000_200x150" / "images"
PEPPER = "bench-pepper"
MODEL = "classifier"

Call = Callable[[int], Awaitable[None]]
Results = dict[str, dict[str, dict[str, float]]]


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and its live descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def closed_loop(
    call: Call, concurrency: int, seconds: float, warmup: int, servers: dict[str, int]
) -> dict[str, float]:
    """``concurrency`` clients calling back to back for ``seconds``: throughput, latency percentiles, and
    the CPU milliseconds per request of each server process tree in ``servers`` and of this client."""
    for i in range(warmup):
        await call(i)
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client(worker: int) -> None:
        nonlocal failures
        i = worker
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call(i)
                latencies.append(time.perf_counter() - started)
            except Exception:  # counted, reported
                failures += 1
            i += concurrency

    cpu_before = {name: tree_cpu_s(pid) for name, pid in servers.items()}
    client_before = time.process_time()  # this process only (the servers are its children)
    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = {name: tree_cpu_s(pid) - cpu_before[name] for name, pid in servers.items()}
    cpu["client"] = time.process_time() - client_before
    ms = [v * 1000 for v in latencies]
    figure = {
        "throughput": len(ms) / elapsed,
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p99_ms": percentile(ms, 99) if ms else float("nan"),
        "n": len(ms),
        "failed": failures,
    }
    for name, seconds_used in cpu.items():
        figure[f"cpu_ms_per_req_{name}"] = seconds_used * 1000 / max(len(ms), 1)
    return figure


def load_images(count: int, size: int, work: Path) -> list[tuple[str, bytes]]:
    if HAM.is_dir():
        paths = sorted(HAM.glob("*.jpg"))[:count]
        return [(p.name, p.read_bytes()) for p in paths]
    manifest = make_demo_dataset(work / "requests", count=max(count, 28), size=size, seed=1)
    return [(Path(r.image).name, manifest.path_of(r).read_bytes()) for r in manifest.records[:count]]


def model_alone(
    model: torch.nn.Module,
    scripted: torch.jit.ScriptModule,
    onnx: bytes,
    size: int,
    seconds: float,
    device: torch.device,
    threads: int,
) -> dict[str, dict[str, float]]:
    """Images/s in this process at batch 1 and 32 (inputs already there): the eager classifier, and the
    served graph (normalization, logits, OOD score) as TorchScript and through onnxruntime."""
    out: dict[str, dict[str, float]] = {}
    session = onnx_session(onnx, threads=threads)
    engines: list[tuple[str, object]] = [("eager", model.to(device)), ("torchscript", scripted)]
    if device.type == "cpu":
        engines.append(("onnxruntime", session))
    for name, net in engines:
        for batch in (1, 32):
            pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
            x = (torch.randn(batch, 3, size, size) if name == "eager" else pixels).to(device)

            def run(net: object = net, x: torch.Tensor = x, name: str = name) -> None:
                if name == "onnxruntime":
                    session.run(["logits__0", "ood_score__1"], {INPUT_NAME: x.numpy()})
                else:
                    net(x)  # type: ignore[operator]

            with torch.inference_mode():
                for _ in range(3):
                    run()
                n, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    run()
                    n += batch
                if device.type == "cuda":
                    torch.cuda.synchronize()
            out[f"{name} batch {batch}"] = {"throughput": n / (time.perf_counter() - started)}
    return out


def wait_http(url: str, what: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} did not answer at {url} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement time per figure")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--preferred", default="8,16,32", help="preferred batch sizes ('' for none)")
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads per Triton instance")
    parser.add_argument("--gateway-workers", type=int, default=1)
    parser.add_argument(
        "--redis-url", default=os.environ.get("DERMASYNTH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    parser.add_argument("--skip", default="", help="comma list of: gateway, triton, naive, alone")
    parser.add_argument(
        "--gpu", action="store_true", help="Triton instances, the naive server and the model alone on the GPU"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    levels = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="dermasynth-bench-inference-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    processes: list[subprocess.Popen[bytes]] = []
    triton: LocalTriton | None = None
    try:
        size = args.image_size
        torch.manual_seed(0)
        calibration = make_demo_dataset(work / "calibration", count=70, size=size, seed=0)
        model = build_model(args.model, len(calibration.classes)).eval()
        pre = Preprocessing(image_size=size)
        exported = export_classifier(model, args.model, calibration.classes, pre, calibration)
        serving_module, _, _ = build_serving_module(model, pre, calibration.classes, calibration)
        store = FilesystemStore(work / "store")
        registry = ModelRegistry(store)
        version = registry.register(MODEL, exported, ModelLineage(run="bench")).version
        (work / "eager.pth").write_bytes(exported.eager_state)
        (work / "contract.json").write_text(exported.contract.model_dump_json())
        images = load_images(64, size, work)
        pixels = [pre.pixels_transform()(load_rgb(data)).numpy()[None] for _, data in images]
        kind = "HAM10000 JPEG" if HAM.is_dir() else "generated PNG"
        print(
            f"{args.model} at {size} px; {len(images)} request images ({kind}, "
            f"{np.mean([len(d) for _, d in images]) / 1024:.0f} KiB on average)",
            flush=True,
        )

        results: dict[str, dict[str, dict[str, float]]] = {}
        if "alone" not in skip:
            device = torch.device("cuda" if args.gpu else "cpu")
            torch.set_num_threads(args.threads)
            example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
            with torch.no_grad():
                scripted = torch.jit.freeze(torch.jit.trace(serving_module.to(device), example.to(device)))
            results["model alone (this process)"] = model_alone(
                model, scripted, exported.onnx, size, args.seconds / 2, device, args.threads
            )
            model.cpu()
            print(json.dumps(results, indent=1), flush=True)

        options = BatchingOptions(
            max_batch_size=args.max_batch_size,
            preferred_batch_sizes=tuple(int(s) for s in args.preferred.split(",") if s),
            max_queue_delay_us=args.queue_delay_us,
            instance_count=args.instances,
            intra_op_threads=args.threads,
            instance_kind="gpu" if args.gpu else "cpu",
        )
        triton = LocalTriton(str(store.root / "models"), work / "triton").start()

        async def deploy() -> None:
            client = TritonClient(triton.url)
            try:
                await Deployer(registry, client).deploy(MODEL, version, options)
            finally:
                await client.close()

        asyncio.run(deploy())
        gateway_port, naive_port = free_port(), free_port()
        env = {
            **os.environ,
            "DERMASYNTH_STORE": "filesystem",
            "DERMASYNTH_STORE_ROOT": str(store.root),
            "DERMASYNTH_TRITON_URL": triton.url,
            "DERMASYNTH_REDIS_URL": args.redis_url,
            "DERMASYNTH_JOB_KEY_PREFIX": prefix,
            "DERMASYNTH_API_KEY_PEPPER": PEPPER,
            "DERMASYNTH_LOG_LEVEL": "WARNING",
            "DERMASYNTH_CACHE_ROOT": str(work / "cache"),
            "DERMASYNTH_RATE_LIMIT_PER_MINUTE": "0",  # one key drives the whole load
            "DERMASYNTH_GATEWAY_INTERNAL_PORT": "0",
        }
        token = ""
        if "gateway" not in skip:  # the gateway checks API keys in Redis
            import redis

            from dermasynth.auth import RedisApiKeyStore, Scope

            keys = RedisApiKeyStore(redis.Redis.from_url(args.redis_url), PEPPER, prefix)
            token = keys.create("bench", [Scope.CLINICIAN]).token
            with (work / "gateway.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "services.gateway.app:create_app",
                            "--factory",
                            "--port",
                            str(gateway_port),
                            "--workers",
                            str(args.gateway_workers),
                            "--log-level",
                            "warning",
                            "--no-access-log",
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            wait_http(f"http://127.0.0.1:{gateway_port}/v1/health/live", "the gateway", processes[-1])
        with (work / "naive.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(REPO / "bench" / "naive_server.py"),
                        "--port",
                        str(naive_port),
                        "--weights",
                        str(work / "eager.pth"),
                        "--contract",
                        str(work / "contract.json"),
                        "--device",
                        "cuda" if args.gpu else "cpu",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        naive_process = processes[-1]
        wait_http(f"http://127.0.0.1:{naive_port}/", "the naive server", naive_process)
        assert triton.process is not None
        pids = {"gateway": processes[0].pid if token else 0, "naive": naive_process.pid, "triton": triton.process.pid}
        results.update(
            asyncio.run(
                serve_figures(args, skip, levels, images, pixels, token, gateway_port, naive_port, triton.url, pids)
            )
        )
        report(args, results, load_before, triton)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if triton is not None:
            triton.stop()
        if "gateway" not in skip:
            import redis

            client = redis.Redis.from_url(args.redis_url)
            for key in client.scan_iter(match=f"{prefix}:*"):
                client.delete(key)


async def serve_figures(
    args: argparse.Namespace,
    skip: set[str],
    levels: list[int],
    images: list[tuple[str, bytes]],
    pixels: list[np.ndarray],
    token: str,
    gateway_port: int,
    naive_port: int,
    triton_url: str,
    pids: dict[str, int],
) -> Results:
    connector = aiohttp.TCPConnector(limit=256)
    http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))
    triton = TritonClient(triton_url)
    results: dict[str, dict[str, dict[str, float]]] = {
        "gateway through Triton": {},
        "gateway, explain=true": {},
        "direct Triton client": {},
        "naive server (eager, 1 request at a time)": {},
    }

    async def post(url: str, field: str, i: int, headers: dict[str, str] | None = None) -> None:
        name, data = images[i % len(images)]
        form = aiohttp.FormData()
        form.add_field(field, data, filename=name, content_type="image/jpeg")
        async with http.post(url, data=form, headers=headers) as response:
            body = await response.read()
            if response.status == 200 and "explain=true" in url and b'"explanation_png":"' not in body:
                raise RuntimeError("no explanation in the answer")
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")

    async def gateway(i: int) -> None:
        await post(f"http://127.0.0.1:{gateway_port}/v1/predictions", "images", i, {"X-API-Key": token})

    async def explained(i: int) -> None:
        await post(f"http://127.0.0.1:{gateway_port}/v1/predictions?explain=true", "images", i, {"X-API-Key": token})

    async def naive(i: int) -> None:
        await post(f"http://127.0.0.1:{naive_port}/predict", "image", i)

    async def direct(i: int) -> None:
        await triton.infer(MODEL, 1, pixels[i % len(pixels)])

    targets = [
        ("gateway through Triton", gateway, "gateway", {"gateway": pids["gateway"], "triton": pids["triton"]}),
        ("gateway, explain=true", explained, "gateway", {"gateway": pids["gateway"], "triton": pids["triton"]}),
        ("direct Triton client", direct, "triton", {"triton": pids["triton"]}),
        ("naive server (eager, 1 request at a time)", naive, "naive", {"naive": pids["naive"]}),
    ]
    try:
        for c in levels:
            for label, call, key, servers in targets:
                if key in skip:
                    continue
                figure = await closed_loop(call, c, args.seconds, warmup=max(8, c), servers=servers)
                results[label][f"c={c}"] = figure
                cpu = ", ".join(
                    f"{k[len('cpu_ms_per_req_') :]} {v:.1f}"
                    for k, v in figure.items()
                    if k.startswith("cpu_ms_per_req_")
                )
                print(
                    f"{label:44s} c={c:<3d} {figure['throughput']:7.1f} req/s  p50 {figure['p50_ms']:7.1f} ms  "
                    f"p99 {figure['p99_ms']:7.1f} ms  ({figure['n']} ok, {figure['failed']} failed; CPU ms/req: "
                    f"{cpu})",
                    flush=True,
                )
    finally:
        await http.close()
        await triton.close()
    return results


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, dict[str, float]]],
    load_before: tuple[float, float, float],
    triton: LocalTriton,
) -> None:
    print(
        "\n== summary (" + f"{args.model} {args.image_size} px, {os.cpu_count()} CPUs; load average before "
        f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
        + "/".join(f"{x:.2f}" for x in os.getloadavg())
        + ")"
    )
    for label, figures in results.items():
        for key, figure in figures.items():
            line = f"{label:44s} {key:20s} {figure['throughput']:7.1f}/s"
            if "p50_ms" in figure:
                line += f"  p50 {figure['p50_ms']:6.1f} ms  p99 {figure['p99_ms']:6.1f} ms"
            print(line)
    print(f"device: {torch.cuda.get_device_name() if args.gpu else 'CPU'}")
    gw, direct = results["gateway through Triton"], results["direct Triton client"]
    explained = results["gateway, explain=true"]
    naive = results["naive server (eager, 1 request at a time)"]
    alone = results.get("model alone (this process)", {})
    engines = {k: v["throughput"] for k, v in alone.items() if k.endswith("batch 32") and not k.startswith("eager")}
    best = max(engines, key=lambda k: engines[k], default="")
    batched = engines.get(best, float("nan"))
    top = max((int(k[2:]) for k in gw), default=0)
    if top and f"c={top}" in naive and "c=1" in gw and "c=1" in direct and "c=1" in naive:
        g, n = gw[f"c={top}"]["throughput"], naive[f"c={top}"]["throughput"]
        e = explained.get(f"c={top}", {}).get("throughput", float("nan"))
        print(
            f"\ngoals: c={top} gateway/naive throughput {g / n:.2f} (>= 2.5 on CPU, >= 10 on a GPU), gateway/best "
            f"in-process engine batched {g / batched:.2f} (>= 0.9; {best}: {batched:.1f}/s), explain on/off "
            f"{e / g:.2f} (>= 0.5)"
        )
        print(
            f"       c=1 p50 gateway/direct {gw['c=1']['p50_ms'] / direct['c=1']['p50_ms']:.2f} (<= 1.3), "
            f"gateway/naive {gw['c=1']['p50_ms'] / naive['c=1']['p50_ms']:.2f} (<= 1.5)"
        )
    print(
        f"triton batching: max_batch_size {args.max_batch_size}, preferred {args.preferred or 'none'}, queue delay "
        f"{args.queue_delay_us} us, {args.instances} instance(s) x {args.threads} threads; gateway workers "
        f"{args.gateway_workers}"
    )
    print(
        json.dumps(
            {
                "args": vars(args),
                "results": results,
                "load_before": load_before,
                "load_after": os.getloadavg(),
                "triton_log": str(triton.log_path),
            }
        )
    )


if __name__ == "__main__":
    random.seed(0)
    main()
