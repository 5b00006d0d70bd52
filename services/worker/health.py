"""Liveness probe of a worker: ``python -m services.worker.health`` exits 0 while the worker's sweeper
thread touches ``DERMASYNTH_WORKER_LIVENESS_FILE`` (after every sweep), 1 otherwise, saying why.

``celery inspect ping`` is no liveness probe for these workers: a solo-pool worker does not answer it
while it trains, which is most of the time.
"""

from __future__ import annotations

import sys
import time

from dermasynth.config import Settings, get_settings
from services.worker.sweeper import sweep_interval

STALE_AFTER_SWEEPS = 3


def check(settings: Settings) -> str | None:
    """None when the worker is alive, else why it is not."""
    path = settings.worker_liveness_file
    limit = max(30.0, STALE_AFTER_SWEEPS * sweep_interval(settings))
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist: the worker has not finished a sweep (still starting, or not running)"
    if age > limit:
        return f"{path} was last touched {age:.0f} s ago (more than {limit:.0f} s): the sweeper thread is stuck"
    return None


def main() -> int:
    problem = check(get_settings())
    if problem is None:
        print("worker alive")
        return 0
    print(f"worker not alive: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
