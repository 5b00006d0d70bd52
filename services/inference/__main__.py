"""``python -m services.inference``: a local tritonserver serving the store's model repository.

It reads the settings (``DERMASYNTH_*``): the repository is ``{store_root}/models`` for the
filesystem store or ``s3://{endpoint}/{bucket}/models`` for S3 (credentials passed as ``AWS_*``),
the HTTP port comes from ``DERMASYNTH_TRITON_URL``, and every model with a live version is loaded
at start. It runs until SIGINT or SIGTERM and then stops the server cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from dermasynth.config import Settings, get_settings
from dermasynth.serving.model_repository import repository_location
from dermasynth.serving.registry import ModelRegistry
from dermasynth.storage import open_store
from services.inference.launcher import LocalTriton

log = logging.getLogger("services.inference")


def local_triton(settings: Settings, work_dir: Path, metrics_port: int = 0) -> LocalTriton:
    """The server the settings describe, with the live models to load (not started)."""
    registry = ModelRegistry(open_store(settings))
    live = [name for name in registry.names() if registry.live(name).version is not None]
    env: dict[str, str] = {}
    if settings.store == "s3":
        env = {
            "AWS_ACCESS_KEY_ID": settings.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
            "AWS_DEFAULT_REGION": settings.s3_region,
        }
    port = int(settings.triton_url.rsplit(":", 1)[1])
    return LocalTriton(
        repository_location(settings), work_dir, models=live, http_port=port, metrics_port=metrics_port, env=env
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("var/triton"), help="backend folder and server log")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (0: a free one)")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    triton = local_triton(settings, args.work_dir, args.metrics_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    triton.start()
    log.info(
        "tritonserver ready on %s serving %s (models loaded: %s); log: %s",
        triton.url,
        triton.repository,
        ", ".join(triton.models) or "none yet",
        triton.log_path,
    )
    try:
        while not stop.wait(1.0):
            if triton.process is None or triton.process.poll() is not None:
                raise SystemExit(f"tritonserver exited; see {triton.log_path}")
    finally:
        triton.stop()


if __name__ == "__main__":
    main()
