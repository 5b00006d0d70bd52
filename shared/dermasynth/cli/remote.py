"""What the HTTP commands share: the gateway client from ``--gateway``/``--key`` and how refusals exit.

The URL and key come from the options, else from their declared environment variables
(``DERMASYNTH_GATEWAY_URL``, ``DERMASYNTH_API_KEY``), else from the settings (a ``.env`` file).
Exit codes: 1 when the gateway refused the operation or could not be reached, 2 for usage errors
(a missing key included), as for every ``dermasynth`` command.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console

from dermasynth.gateway_client import (
    DEFAULT_GATEWAY_URL,
    ENV_API_KEY,
    ENV_GATEWAY_URL,
    MISSING_KEY,
    GatewayClient,
    GatewayError,
)

console = Console(stderr=True)

EXIT_FAILED = 1
"""The operation or the job failed (the gateway refused it, could not be reached, or the job failed)."""
EXIT_USAGE = 2
"""The command line was wrong (click's own code for usage errors)."""

GatewayOption = Annotated[
    str | None,
    typer.Option(
        "--gateway", envvar=ENV_GATEWAY_URL, show_envvar=True, help=f"gateway URL [default: {DEFAULT_GATEWAY_URL}]"
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", envvar=ENV_API_KEY, show_envvar=True, help="API key (secret: prefer the env var)"),
]


def _settings_fallback() -> tuple[str, str]:
    """The URL and key of the settings (they also read a ``.env`` file)."""
    from pydantic import ValidationError

    from dermasynth.config import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:  # a client must not fail on a service's setting it does not use
        first = exc.errors()[0]
        console.print(f"[yellow]ignoring the DERMASYNTH_* settings:[/yellow] {first['loc']}: {first['msg']}")
        return DEFAULT_GATEWAY_URL, ""
    return settings.gateway_url, settings.api_key.get_secret_value() if settings.api_key else ""


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``message`` (stderr) and return the exit to raise."""
    console.print(message)
    return typer.Exit(code)


@contextmanager
def gateway(url: str | None, key: str | None) -> Iterator[GatewayClient]:
    """A client of the gateway; a refusal exits 1 with the gateway's status, reason and detail."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per poll would drown the progress bar
    if not url or not key:
        default_url, default_key = _settings_fallback()
        url, key = url or default_url, key or default_key
    if not key:
        raise fail(
            f"[red]no API key:[/red] pass --key or set {ENV_API_KEY} (an operator issues one with "
            "`dermasynth keys create`)",
            EXIT_USAGE,
        )
    client = GatewayClient(url, key)
    try:
        yield client
    except GatewayError as exc:
        message = f"[red]gateway unreachable:[/red] {exc.detail}" if exc.status == 0 else f"[red]refused:[/red] {exc}"
        raise fail(message, EXIT_USAGE if exc.reason == MISSING_KEY else EXIT_FAILED) from exc
    finally:
        client.close()
