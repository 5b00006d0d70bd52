"""``dermasynth admin ...``: an operator's one-off maintenance (talks to Redis and the object store)."""

from __future__ import annotations

from typing import Annotated

import redis
import typer
from rich.console import Console

from dermasynth.cli.output import JsonOption, print_json
from dermasynth.config import get_settings
from dermasynth.data.catalog import DatasetCatalog
from dermasynth.jobs.ownership import assign_owner
from dermasynth.jobs.store import RedisJobStore
from dermasynth.serving.registry import ModelRegistry
from dermasynth.storage import open_store

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)


@app.command("assign-owner")
def assign_owner_command(
    owner: Annotated[str, typer.Option(help="the team or project that gets every record without an owner")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list the records; change nothing")] = False,
    as_json: JsonOption = False,
) -> None:
    """Give every job, dataset and model version stored before owners existed (which only admin keys reach)
    to OWNER, through the same indexes the gateway lists from."""
    settings = get_settings()
    store = open_store(settings)
    jobs = RedisJobStore(redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5), settings.job_key_prefix)
    try:
        found = assign_owner(
            owner, jobs, DatasetCatalog(store, settings.cache_root), ModelRegistry(store), dry_run=dry_run
        )
    except (ValueError, redis.RedisError) as exc:
        console.print(f"[red]cannot assign the owner:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(found)
        return
    verb = "would give" if dry_run else "gave"
    console.print(
        f"{verb} {len(found.jobs)} jobs, {len(found.datasets)} datasets and {len(found.model_versions)} model "
        f"versions to owner {owner!r}"
    )
    for kind, ids in (("job", found.jobs), ("dataset", found.datasets), ("model version", found.model_versions)):
        for each in ids:
            typer.echo(f"{kind} {each}")
