"""Real services for the platform tests: uvicorn gateways and Celery worker processes on this machine.

Each platform gets a Redis key prefix of its own on the test database (so its Celery queues and job
records are its own) and a filesystem store in a temporary folder. Leases, visibility timeout, retries
and grace periods are the production defaults. Everything it starts is stopped, and its keys deleted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from dermasynth.auth import RedisApiKeyStore, Scope
from dermasynth.config import Settings
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
PEPPER = "test-pepper"
STARTUP_TIMEOUT_S = 120.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Platform:
    """One isolated DermaSynth deployment: its settings (as environment), keys, and processes."""

    redis_url: str
    root: Path
    prefix: str = field(default_factory=lambda: f"dstest-{uuid.uuid4().hex[:12]}")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gateway_url: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DERMASYNTH_ENVIRONMENT": "test",
            "DERMASYNTH_REDIS_URL": self.redis_url,
            "DERMASYNTH_JOB_KEY_PREFIX": self.prefix,
            "DERMASYNTH_STORE": "filesystem",
            "DERMASYNTH_STORE_ROOT": str(self.root / "store"),
            "DERMASYNTH_API_KEY_PEPPER": PEPPER,
            "DERMASYNTH_WORKER_METRICS_PORT": "0",
            "DERMASYNTH_GATEWAY_INTERNAL_PORT": "0",  # several gateways share this host
            "DERMASYNTH_LOG_LEVEL": "INFO",
            "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def settings(self) -> Settings:
        return Settings(
            redis_url=self.redis_url,
            job_key_prefix=self.prefix,
            store_root=self.root / "store",
            cache_root=self.root / "cache-tests",
            api_key_pepper=PEPPER,
            environment="test",
            worker_metrics_port=0,
        )

    def key(self, *scopes: Scope) -> str:
        """A fresh API key with these scopes."""
        keys = RedisApiKeyStore(redis.Redis.from_url(self.redis_url), PEPPER, self.prefix)
        return keys.create("tests", list(scopes)).token

    def _spawn(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        handle = log.open("wb")
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def start_worker(
        self, name: str, queues: str = "gan,train,default", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A Celery worker process (solo pool) with its own dataset cache (``env``: more variables);
        returns once it consumes."""
        log = self.root / f"worker-{name}.log"
        env = {
            **self.env,
            "DERMASYNTH_CACHE_ROOT": str(self.root / f"cache-{name}"),
            "DERMASYNTH_WORKER_LIVENESS_FILE": str(self.root / f"worker-{name}.alive"),
            **(env or {}),
        }
        process = self._spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "services.worker.celery_app",
                "worker",
                "--pool=solo",
                "-Q",
                queues,
                "-n",
                f"{name}-{self.prefix}@%h",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
            ],
            log,
            env,
        )
        wait_until(
            lambda: process.poll() is not None or b" ready." in log.read_bytes(),
            STARTUP_TIMEOUT_S,
            f"worker {name} to start (log: {log})",
            interval=0.5,
        )
        assert process.poll() is None, log.read_text()
        return process

    def start_gateway(self) -> str:
        """A uvicorn gateway on a free port; returns its base URL once it answers."""
        port = free_port()
        log = self.root / "gateway.log"
        env = {**self.env, "DERMASYNTH_CACHE_ROOT": str(self.root / "cache-gateway")}
        process = self._spawn(
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
            log,
            env,
        )
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/v1/health/live", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, STARTUP_TIMEOUT_S, f"the gateway to answer (log: {log})", interval=0.5)
        self.gateway_url = url
        return url

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """``kill -9`` the process (and anything it started)."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop a process: SIGTERM, then SIGKILL if it lingers."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(process)

    def close(self) -> None:
        """Stop every process and delete the platform's Redis keys."""
        for process in self.processes:
            self.stop(process)
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
            client.delete(key)
