"""What the gateway commands share: the client from ``--gateway``/``--key`` (or the settings) and error output."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from dermasynth.config import get_settings
from dermasynth.gateway_client import GatewayClient, GatewayError

console = Console(stderr=True)


@contextmanager
def gateway(url: str | None, key: str | None) -> Iterator[GatewayClient]:
    """A client of the gateway; exits with status 2 and the gateway's reason when a call is refused."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per poll would drown the progress bar
    settings = get_settings()
    token = key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not token:
        console.print(
            "[red]no API key:[/red] pass --key or set DERMASYNTH_API_KEY (an operator issues one with "
            "`dermasynth keys create`)"
        )
        raise typer.Exit(2)
    client = GatewayClient(url or settings.gateway_url, token)
    try:
        yield client
    except GatewayError as exc:
        console.print(f"[red]{'gateway unreachable' if exc.status == 0 else 'refused'}:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        client.close()
