"""``dermasynth predict FILES...``: the deployed model's most likely classes per image, through the gateway.

Needs a key with the clinician scope. Images are sent in batches of at most ``--batch-size`` (the
gateway accepts up to ``DERMASYNTH_MAX_PREDICTION_IMAGES`` per request, 32 by default). Exit 1 when
any image could not be answered (its reason is printed); the others are still shown.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dermasynth.cli.output import JsonOption, print_json, print_table
from dermasynth.cli.remote import EXIT_FAILED, GatewayOption, KeyOption, console, gateway
from dermasynth.gateway_client import ImageFile
from dermasynth.serving.schemas import DISCLAIMER, ImageError, ImagePrediction, ImageResult, PredictionResponse


def _batches(files: list[Path], size: int) -> list[list[Path]]:
    return [files[i : i + size] for i in range(0, len(files), size)]


def _row(result: ImageResult) -> tuple[str, ...]:
    if isinstance(result, ImageError):
        return (result.file, "[red]cannot be used[/red]", f"{result.reason.value}: {result.detail}", "")
    top = " ".join(f"{item.label} {item.probability:.0%}" for item in result.top_k)
    answer = (
        f"[yellow]unsure ({result.abstain_reason}): see a dermatologist[/yellow]"
        if result.abstain
        else f"{result.top_k[0].name}"
    )
    return (result.file, answer, top, f"{result.model} v{result.model_version}")


def _write_heat_maps(results: list[ImageResult], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        if isinstance(result, ImagePrediction) and result.explanation_png:
            target = folder / f"{Path(result.file).stem}.gradcam.png"
            target.write_bytes(base64.b64decode(result.explanation_png))
            console.print(f"wrote {target}")


def predict(
    files: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="images (JPEG, PNG, BMP, TIFF, WebP)")
    ],
    top_k: Annotated[int, typer.Option(min=1, max=20, help="classes to list per image")] = 3,
    explain: Annotated[
        Path | None, typer.Option("--explain", help="write a Grad-CAM heat map per image into this folder")
    ] = None,
    model: Annotated[str | None, typer.Option(help="a served model other than the gateway's default")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="images per request")] = 32,
    url: GatewayOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Most likely lesion classes for image FILES, from the deployed model (not a diagnosis).

    Each image gets its top classes with probabilities, or an "unsure: see a dermatologist" flag when
    the model abstains. Exit 1 when any image could not be used.
    """
    responses: list[PredictionResponse] = []
    with gateway(url, key) as client:
        for batch in _batches(files, batch_size):
            images = [ImageFile.read(path) for path in batch]
            responses.append(client.predict(images, top_k=top_k, explain=explain is not None, model=model))
    results = [result for response in responses for result in response.results]
    failed = sum(response.failed for response in responses)
    if explain is not None:
        _write_heat_maps(results, explain)
    if as_json:
        print_json(responses[0] if len(responses) == 1 else responses)
    else:
        table = Table(
            "file", "answer", f"top {top_k}", "model", title=f"{len(results) - failed} of {len(results)} answered"
        )
        for result in results:
            table.add_row(*_row(result))
        print_table(table)
        console.print(DISCLAIMER)
    if failed:
        raise typer.Exit(EXIT_FAILED)
