"""What the manifests tell programs to do, run for real where the program is on this machine: the Redis
container's command (redis-server), the MinIO init script's refusals (sh), and Triton's command line
(tritonserver from the nvidia-pytriton wheel) with its restricted model control and the gateway's client."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dermasynth.serving.inference_client import ADMIN_HEADER, InferenceFailed, TritonClient
from tests.k8s import invariants as inv
from tests.k8s.render import REPO

Doc = dict[str, Any]
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_container_command_requires_its_password_and_keeps_an_aof(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli are not installed (apt-get install redis-server)")
    docs = rendered["production"]
    container = inv.containers(inv.the(docs, "StatefulSet", "redis"), init=False)[0]
    environment = inv.container_environment(docs, container)
    port = _free_port()
    # the container's own script, on a free port and a temporary data folder instead of the volume
    script = container["args"][0].replace("--dir /data", f"--dir {tmp_path} --port {port} --bind 127.0.0.1")
    env = {**os.environ, "REDIS_PASSWORD": environment["REDIS_PASSWORD"]}
    server = subprocess.Popen(
        [*container["command"], script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        cli = ["redis-cli", "-p", str(port)]
        deadline = time.monotonic() + 10
        while (
            subprocess.run([*cli, "ping"], capture_output=True, text=True).stdout.strip()
            != "NOAUTH Authentication required."
        ):
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.1)
        authed = {**os.environ, "REDISCLI_AUTH": environment["REDISCLI_AUTH"]}
        assert subprocess.run([*cli, "ping"], env=authed, capture_output=True, text=True).stdout.strip() == "PONG"
        aof = subprocess.run([*cli, "config", "get", "appendonly"], env=authed, capture_output=True, text=True)
        assert aof.stdout.split() == ["appendonly", "yes"]
        listing = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert environment["REDIS_PASSWORD"] not in listing, "the password shows in the process list"
    finally:
        server.terminate()
        server.wait(timeout=10)


GOOD_SECRETS = {
    "MINIO_ROOT_USER": "dermasynth-root",
    "MINIO_ROOT_PASSWORD": "3f2a9c7e5b1d4f608a2c",
    "GATEWAY_S3_ACCESS_KEY": "dermasynth-gateway",
    "GATEWAY_S3_SECRET_KEY": "9b8e7d6c5b4a39281706",
    "WORKER_S3_ACCESS_KEY": "dermasynth-worker",
    "WORKER_S3_SECRET_KEY": "a1b2c3d4e5f60718293a",
    "TRITON_S3_ACCESS_KEY": "dermasynth-triton",
    "TRITON_S3_SECRET_KEY": "0f1e2d3c4b5a69788796",
}


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MINIO_ROOT_PASSWORD", "", "MINIO_ROOT_PASSWORD is empty"),
        ("MINIO_ROOT_PASSWORD", "minioadmin", "shorter than 16"),
        ("GATEWAY_S3_SECRET_KEY", "change-me-too-change-me-too", "GATEWAY_S3_SECRET_KEY is a placeholder"),
        ("TRITON_S3_SECRET_KEY", "0123456789ABCDEF-EXAMPLE", "TRITON_S3_SECRET_KEY is a placeholder"),
        ("WORKER_S3_ACCESS_KEY", "dermasynth-root", "must not be the root user"),
    ],
)
def test_minio_init_refuses_placeholder_secrets_before_touching_the_store(
    variable: str, value: str, says: str, tmp_path: Path
) -> None:
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), **GOOD_SECRETS, variable: value}
    result = subprocess.run(
        ["sh", str(REPO / "deploy" / "minio" / "init.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 64, result.stderr
    assert "refusing to start" in result.stderr and says in result.stderr


@pytest.fixture
def restricted_triton(rendered: dict[str, list[Doc]], tmp_path: Path) -> Any:
    """A real tritonserver started with the Triton Deployment's own arguments (an empty local repository and
    free ports instead of the store and the fixed ports)."""
    from services.inference.launcher import LocalTriton, pytriton_root

    try:
        pytriton_root()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        pytest.skip(f"no tritonserver binary here: {exc}")
    docs = rendered["gpu"]
    container = inv.containers(inv.the(docs, "Deployment", "triton"), init=False)[0]
    environment = inv.container_environment(docs, container)
    key = environment["TRITON_ADMIN_KEY"]
    args = [
        a.replace("$(TRITON_ADMIN_KEY)", key)
        for a in container["args"]
        if not a.startswith(("--model-repository=", "--http-port=", "--metrics-port="))
    ]
    triton = LocalTriton(repository=str(tmp_path / "models"), work_dir=tmp_path / "triton", extra_args=args)
    triton.start(timeout_s=60)
    try:
        yield triton, key
    finally:
        triton.stop()


def _post(url: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_triton_model_control_answers_only_the_gateways_key(restricted_triton: Any) -> None:
    triton, key = restricted_triton
    with urllib.request.urlopen(f"http://{triton.url}/v2/health/live", timeout=5) as response:
        assert response.status == 200  # health stays open (probes)
    status, body = _post(f"http://{triton.url}/v2/repository/index", {})
    assert status != 200 and "restricted" in body.lower(), (status, body)
    assert _post(f"http://{triton.url}/v2/repository/index", {ADMIN_HEADER: "not-the-key"})[0] != 200
    assert _post(f"http://{triton.url}/v2/repository/index", {ADMIN_HEADER: key}) == (200, "[]")


def test_the_gateways_client_sends_the_key_when_loading_models(restricted_triton: Any) -> None:
    triton, key = restricted_triton

    async def load(admin_key: str | None) -> str:
        client = TritonClient(triton.url, timeout_s=10, admin_key=admin_key)
        try:
            await client.load_model("absent")
        except InferenceFailed as exc:
            return str(exc)
        finally:
            await client.close()
        return "loaded"

    assert "restricted" in asyncio.run(load(None)).lower()
    with_key = asyncio.run(load(key))
    assert "restricted" not in with_key.lower() and "absent" in with_key  # refused for the model, not the key


def test_keda_watches_the_redis_keys_celery_and_the_job_store_really_use(
    rendered: dict[str, list[Doc]], redis_url: str
) -> None:
    """One message per queue through the gateway's Celery configuration and one running job per queue through
    the workers' job store, on a real Redis; then the keys the ScaledObjects' triggers name (with this test's
    own key prefix instead of `dermasynth`) hold them, with the types KEDA counts (LLEN, ZCARD)."""
    import uuid

    import redis

    from dermasynth.config import Settings
    from dermasynth.jobs import JobKind, JobRecord, RedisJobStore
    from dermasynth.jobs.queues import QUEUE_OF, QUEUES, make_celery
    from tests.conftest import delete_redis_prefix

    prefix = f"test-keda-{uuid.uuid4().hex[:8]}"
    app = make_celery(Settings(redis_url=redis_url, job_key_prefix=prefix))
    client = redis.Redis.from_url(redis_url)
    jobs = RedisJobStore(client, prefix)
    try:
        for queue in QUEUES:
            app.send_task("dermasynth.keda_probe", args=[queue], queue=queue)
            kind = next(k for k, q in QUEUE_OF.items() if q == queue)
            record = jobs.create(JobRecord(id=uuid.uuid4().hex, kind=JobKind(kind), queue=queue, params={}))
            assert jobs.acquire_lease(record.id, "worker-1", 60, queue=queue)
        triggers = [t for s in inv.of_kind(rendered["gpu"], "ScaledObject") for t in s["spec"]["triggers"]]
        assert len(triggers) == 2 * len(QUEUES)
        for trigger in triggers:
            key = trigger["metadata"]["listName"]
            assert key.startswith("dermasynth:")
            real = prefix + key.removeprefix("dermasynth")
            kind_of_key = client.type(real)
            count = client.llen(real) if kind_of_key == b"list" else client.zcard(real)
            assert (kind_of_key, count) == ((b"list" if trigger["name"].startswith("queued_") else b"zset"), 1), key
    finally:
        app.close()
        delete_redis_prefix(redis_url, prefix)
