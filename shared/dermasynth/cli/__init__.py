"""``dermasynth``: the command line. Each command lives in its own module, imported only when it runs.

``dermasynth --help`` lists the commands from :data:`COMMANDS` without importing any of them, so it
starts at once; the HTTP commands (``datasets``, ``jobs``, ``models``, ``predict``) and the operator's
``keys`` import no torch, torchvision, scikit-learn or scipy, and work in a client-only install
(``pip install 'dermasynth[client]'``). The local commands (``data``, ``gan``, ``train``, ``evaluate``,
``experiment``) need the ``train`` extra.

Exit codes: 0 success; 1 the operation or the job failed; 2 usage (a wrong command line).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer import _click as click  # typer 0.29 vendors click; its group and command classes derive from this one
from typer.core import TyperCommand, TyperGroup

from dermasynth import __version__

HTTP_PANEL = "Over HTTP (the gateway; client install)"
OPERATOR_PANEL = "Operator (Redis; gateway install)"
LOCAL_PANEL = "Local (this machine; train install)"


@dataclass(frozen=True)
class Entry:
    """Where a command lives (``module:attribute``: a Typer app or a function) and how ``--help`` lists it."""

    target: str
    help: str
    panel: str
    extra: str


COMMANDS: dict[str, Entry] = {
    "datasets": Entry(
        "dermasynth.cli.datasets:app", "Datasets on the gateway: upload, register, list, show.", HTTP_PANEL, "client"
    ),
    "jobs": Entry(
        "dermasynth.cli.jobs:app",
        "Jobs on the gateway: submit, status, list, cancel, logs, artefacts, download.",
        HTTP_PANEL,
        "client",
    ),
    "models": Entry(
        "dermasynth.cli.models:app",
        "Served models on the gateway: list, show, export a training job, deploy, roll back.",
        HTTP_PANEL,
        "client",
    ),
    "predict": Entry(
        "dermasynth.cli.predict:predict",
        "Most likely lesion classes for image FILES, from the deployed model (not a diagnosis).",
        HTTP_PANEL,
        "client",
    ),
    "keys": Entry(
        "dermasynth.cli.keys:app", "Issue, list and revoke the API keys the gateway accepts.", OPERATOR_PANEL, "gateway"
    ),
    "admin": Entry(
        "dermasynth.cli.admin:app",
        "Maintenance: give records stored before owners existed an owner.",
        OPERATOR_PANEL,
        "gateway",
    ),
    "data": Entry(
        "dermasynth.cli.data:app",
        "Local datasets: generate demo lesions, import a layout, show statistics.",
        LOCAL_PANEL,
        "train",
    ),
    "gan": Entry(
        "dermasynth.cli.gan:app",
        "Train the class-conditional GAN, sample synthetic images, evaluate their quality.",
        LOCAL_PANEL,
        "train",
    ),
    "train": Entry(
        "dermasynth.cli.train:train",
        "Train a classifier on a dataset folder; checkpoints every epoch, resumable.",
        LOCAL_PANEL,
        "train",
    ),
    "evaluate": Entry(
        "dermasynth.cli.evaluate:evaluate",
        "Evaluate a trained run on a split: balanced accuracy, macro-F1, AUC with 95% intervals.",
        LOCAL_PANEL,
        "train",
    ),
    "experiment": Entry(
        "dermasynth.cli.experiment:experiment",
        "Run an ablation (arms x backbones x seeds) and write its report.",
        LOCAL_PANEL,
        "train",
    ),
}


def load_command(name: str) -> click.Command:
    """Import the command ``name`` and build its click command (its module is imported here, not before).

    Exits with status 1, naming the extra to install, when the install lacks a package the command needs.
    """
    entry = COMMANDS[name]
    module_name, _, attribute = entry.target.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "dermasynth":
            raise
        typer.echo(
            f"error: `dermasynth {name}` needs the {entry.extra!r} extra ({exc.name} is not installed): "
            f"pip install 'dermasynth[{entry.extra}]'",
            err=True,
        )
        raise typer.Exit(1) from exc
    if isinstance(target, typer.Typer):
        command: click.Command = typer.main.get_group(target)
        command.help = entry.help  # the entry is the one home of a group's help line
    else:
        single = typer.Typer(add_completion=False)
        single.command(name, help=entry.help if not target.__doc__ else None)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """A group that lists :data:`COMMANDS` from their entries and imports a command only to run it."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if self._listing:  # the help page needs only the name, the line of help and the panel
            return TyperCommand(cmd_name, help=entry.help, rich_help_panel=entry.panel)
        return load_command(cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"dermasynth {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=LazyGroup,
    help="DermaSynth: GAN-augmented skin-lesion classification. Exit codes: 0 success, 1 the operation or "
    "job failed, 2 usage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """DermaSynth: GAN-augmented skin-lesion classification."""


def main(argv: list[str] | None = None) -> Any:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app(argv)
