"""Start and stop a local tritonserver: the binary shipped in the nvidia-pytriton wheel, on CPU.

Two pitfalls of that binary are handled here (see ../shared/ARCHITECTURE.md):

* its Python backend stub links ``libpython3.11.so``; ``LD_LIBRARY_PATH`` must lead to the running
  interpreter's ``LIBDIR``, or loading a model fails on an interpreter mismatch;
* a standard model repository needs a backend directory: ``python/`` holds ``libtriton_python.so``
  and ``triton_python_backend_utils.py`` (copies) and a symbolic link (not a copy: its library path
  is relative to where it really lies) to the stub of this Python version. Beside it, ``onnxruntime/``
  holds DermaSynth's Python-based ``onnxruntime`` backend (``backend/model.py``), which runs the
  repository's ``model.onnx`` through onnxruntime as the official image's backend does.

The server runs with ``--model-control-mode=explicit`` on free ports, loads the models it is told to,
and is stopped with SIGTERM (then SIGKILL of its process group after a timeout).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).resolve().parent / "backend" / "model.py"


class TritonStartError(RuntimeError):
    """tritonserver did not become ready; the message holds the end of its log."""


def pytriton_root() -> Path:
    """The ``tritonserver`` folder inside the installed nvidia-pytriton wheel.

    Raises:
        FileNotFoundError: if nvidia-pytriton is not installed.
    """
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing PyTriton itself
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nvidia-pytriton is not installed (see pyproject.toml)")
    root = Path(next(iter(spec.submodule_search_locations))).resolve() / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"no tritonserver binary under {root}; install nvidia-pytriton (see pyproject.toml)")
    return root


def build_backend_dir(dest: Path) -> Path:
    """Lay out the backend directory (``python/`` and ``onnxruntime/``) in ``dest``; returns ``dest``."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no Python backend stub for Python {version} (no {stub})")
    python_dir, onnx_dir = dest / "python", dest / "onnxruntime"
    python_dir.mkdir(parents=True, exist_ok=True)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(root / "backends" / "python" / name, python_dir / name)
    link = python_dir / "triton_python_backend_stub"
    link.unlink(missing_ok=True)
    link.symlink_to(stub)
    shutil.copy2(BACKEND_SOURCE, onnx_dir / "model.py")
    return dest


def server_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus what the backend stub needs.

    ``LD_LIBRARY_PATH`` starts with libpython's folder. ``PATH`` starts with this interpreter's folder:
    the stub's embedded interpreter takes its ``sys.prefix`` from ``python3`` on ``PATH`` (it ignores
    PYTHONPATH), so the virtual environment's onnxruntime and numpy are the ones it imports. Left to the
    base interpreter's site-packages, a numpy 2 there breaks every output ("output tensor shape does
    not match size of output"), and onnxruntime would be missing.
    """
    env = dict(os.environ)
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    env.update(extra or {})
    return env


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalTriton:
    """A tritonserver process serving ``repository`` (a folder or ``s3://host:port/bucket/prefix``).

    Args:
        repository: the model repository Triton reads.
        work_dir: holds the backend directory and ``tritonserver.log``.
        models: models to load at start (explicit model control; more can be loaded over the API).
        http_port, metrics_port: 0 picks free ports.
        env: extra environment, e.g. ``AWS_ACCESS_KEY_ID`` for an S3 repository.
        extra_args: more tritonserver options.
        exit_timeout_s: how long a stopping server waits for in-flight requests and open connections.
    """

    repository: str
    work_dir: Path
    models: list[str] = field(default_factory=list)
    http_port: int = 0
    metrics_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    exit_timeout_s: int = 5
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``host:port`` of the HTTP endpoint (what tritonclient and DERMASYNTH_TRITON_URL take)."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "tritonserver.log"

    def command(self) -> list[str]:
        """The tritonserver command line."""
        args = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.work_dir / 'backends'}",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in self.models),
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--allow-grpc=false",
            f"--http-port={self.http_port}",
            "--http-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-verbose=0",
        ]
        return [*args, *self.extra_args]

    def start(self, timeout_s: float = 120.0) -> LocalTriton:
        """Start the server and wait until it answers and every model in ``models`` is ready.

        Raises:
            TritonStartError: if it exits or is not ready within ``timeout_s``.
        """
        if self.process is not None:
            raise RuntimeError(f"tritonserver is already running (pid {self.process.pid})")
        if "://" not in self.repository:  # a local repository may still be empty: Triton needs the folder
            Path(self.repository).mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        build_backend_dir(self.work_dir / "backends")
        self.http_port = self.http_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=server_environment(self.env),
                start_new_session=True,
            )
        log.info(
            "tritonserver pid %d on %s (metrics :%d), repository %s",
            self.process.pid,
            self.url,
            self.metrics_port,
            self.repository,
        )
        deadline = time.monotonic() + timeout_s
        while self._get("/v2/health/live") != 200:
            self._check_alive(deadline, "the server to answer", timeout_s)
            time.sleep(0.1)
        for name in self.models:
            while self._get(f"/v2/models/{name}/ready") != 200:
                self._check_alive(deadline, f"model {name!r} to load", timeout_s)
                failure = self._load_failure(name)
                if failure:
                    self.stop()
                    raise TritonStartError(f"tritonserver could not load model {name!r}: {failure}\n{self.log_tail()}")
                time.sleep(0.2)
        return self

    def _check_alive(self, deadline: float, waiting_for: str, timeout_s: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise TritonStartError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            self.stop()
            raise TritonStartError(
                f"tritonserver: no sign of {waiting_for} after {timeout_s:.0f} s:\n{self.log_tail()}"
            )

    def _load_failure(self, name: str) -> str | None:
        """Why ``name`` failed to load, from the repository index (None while it is loading or ready)."""
        request = urllib.request.Request(f"http://{self.url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        entries = [entry for entry in index if entry.get("name") == name]
        if not entries:
            return f"no model {name!r} in the repository {self.repository}"
        state = entries[0].get("state", "")
        return f"{state}: {entries[0].get('reason', '')}" if state == "UNAVAILABLE" else None

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.url}{path}", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL the server's process group (its backend stubs)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver pid %d did not stop in %.0f s; killing it", process.pid, timeout_s)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> LocalTriton:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
