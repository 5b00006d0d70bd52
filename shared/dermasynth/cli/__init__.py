"""``dermasynth``: the command line for engineers. Each command group lives in its own module."""

from __future__ import annotations

import logging

import typer

from dermasynth.cli import data, datasets, gan, jobs, keys, models
from dermasynth.cli.evaluate import evaluate
from dermasynth.cli.experiment import experiment
from dermasynth.cli.train import train

app = typer.Typer(
    help="DermaSynth: GAN-augmented skin-lesion classification.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(data.app, name="data")
app.add_typer(gan.app, name="gan")
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(keys.app, name="keys")
app.add_typer(models.app, name="models")
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("experiment")(experiment)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()
