"""``dermasynth keys ...``: issue, list and revoke API keys (an operator's command: it talks to Redis)."""

from __future__ import annotations

from typing import Annotated

import redis
import typer
from rich.console import Console
from rich.table import Table

from dermasynth.auth import KeyNotFound, RedisApiKeyStore, Scope
from dermasynth.cli.output import JsonOption, print_json, print_table
from dermasynth.config import get_settings

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)


def _store() -> RedisApiKeyStore:
    settings = get_settings()
    return RedisApiKeyStore(
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5),
        settings.api_key_pepper.get_secret_value(),
        settings.job_key_prefix,
    )


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who or what the key is for")],
    scope: Annotated[
        list[Scope],
        typer.Option(
            help="engineer (datasets, jobs, models), clinician (predictions), deployer (change the live model), "
            "admin (every owner, audit trail), delegate (may name the person it acts for: the web app's "
            "service key); repeat for several"
        ),
    ],
    owner: Annotated[
        str, typer.Option(help="the team or project whose datasets, jobs and models the key reaches (e.g. 'derm-lab')")
    ],
) -> None:
    """Issue a key. Its token is printed once (stdout) and never stored; keep it secret."""
    try:
        issued = _store().create(name, scope, owner)
    except (ValueError, redis.RedisError) as exc:
        console.print(f"[red]cannot create the key:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"key {issued.key.id} ({', '.join(issued.key.scopes)}) of owner {issued.key.owner!r} for "
        f"{issued.key.name!r}; the token "
        "below is shown only now"
    )
    typer.echo(issued.token)


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id (12 hex digits, as in `keys list`)")]) -> None:
    """Revoke a key: the gateway refuses it from the next request on."""
    try:
        key = _store().revoke(key_id)
    except (KeyNotFound, redis.RedisError) as exc:
        console.print(f"[red]cannot revoke:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"revoked key {key.id} ({key.name!r}) at {key.revoked_at}")


@app.command("list")
def list_(
    show_revoked: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
    as_json: JsonOption = False,
) -> None:
    """The keys (ids, names, scopes, dates; never secrets)."""
    try:
        keys = _store().list(include_revoked=show_revoked)
    except redis.RedisError as exc:
        console.print(f"[red]cannot list keys:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(keys)
        return
    table = Table(title=f"{len(keys)} API keys")
    for column in ("id", "name", "owner", "scopes", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.owner,
            ", ".join(key.scopes),
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    print_table(table)
