from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from PIL import Image

from dermasynth.data.images import load_rgb
from dermasynth.serving.calibration import MALIGNANT_CLASSES, calibrated_probabilities, decide
from dermasynth.serving.conformal import prediction_sets
from dermasynth.serving.explain import Explainer
from dermasynth.serving.inference_client import TritonClient
from dermasynth.serving.prediction import BadRequest, NoLiveModel, Predictor, Upload
from dermasynth.serving.retention import Retention
from dermasynth.serving.schemas import ImageError, ImagePrediction, PredictionResponse
from dermasynth.storage import FilesystemStore
from tests.triton_fixtures import Served

T = TypeVar("T")


def run_with_predictor(served: Served, use: Callable[[Predictor], Awaitable[T]], **options: object) -> T:
    async def go() -> T:
        client = TritonClient(served.triton.url)
        predictor = Predictor(
            client, served.registry, default_model=served.name, max_images=8, max_pixels=10_000_000, **options
        )  # type: ignore[arg-type]
        try:
            return await use(predictor)
        finally:
            await client.close()

    return asyncio.run(go())


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _uploads(served: Served, split: str, n: int) -> list[Upload]:
    manifest = served.run.manifest
    return [Upload(Path(r.image).name, manifest.path_of(r).read_bytes()) for r in manifest.in_split(split)[:n]]


def _noise(seed: int = 0, size: tuple[int, int] = (64, 48)) -> Upload:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Upload("noise.png", _png(Image.fromarray(pixels)))


def test_predictions_equal_the_eager_models_probabilities(served: Served) -> None:
    uploads = _uploads(served, "test", 6)
    response = run_with_predictor(served, lambda p: p.predict(uploads, top_k=7))
    trained = served.run.trained
    batch = torch.stack([trained.preprocessing.eval_transform()(load_rgb(u.data)) for u in uploads])
    contract = served.exported.contract
    assert contract.calibration is not None and contract.conformal is not None
    eager = calibrated_probabilities(np.log(trained.probabilities(batch).numpy()), contract.calibration)
    labels = decide(eager, contract.calibration, contract.operating_point, trained.classes)
    members = prediction_sets(eager, contract.conformal)
    assert response.model == served.name and response.model_version == served.version
    assert (response.succeeded, response.failed) == (6, 0) and "not a diagnosis" in response.disclaimer
    for row, (result, expected) in enumerate(zip(response.results, eager, strict=True)):
        assert isinstance(result, ImagePrediction) and result.calibrated
        got = {c.label: c.probability for c in result.top_k}
        assert [c.probability for c in result.top_k] == sorted(got.values(), reverse=True)
        np.testing.assert_allclose([got[c] for c in trained.classes], expected, atol=1e-4)
        assert result.top_k[0].name and result.model_version == served.version
        assert result.label == trained.classes[labels[row]]
        assert [c.label for c in result.prediction_set] == [
            c for c in sorted(trained.classes, key=lambda c: -got[c]) if members[row, trained.classes.index(c)]
        ]
        assert result.set_coverage == 0.9 and result.top_k[0].label == result.prediction_set[0].label


def test_abstain_reasons_follow_the_prediction_set(served: Served) -> None:
    """A set mixing malignant and benign classes, or larger than allowed, abstains and says so."""
    uploads = _uploads(served, "test", 8)
    response = run_with_predictor(served, lambda p: p.predict(uploads))
    policy = served.exported.contract.abstention
    seen: set[str] = set()
    for result in response.results:
        assert isinstance(result, ImagePrediction)
        in_set = [c.label for c in result.prediction_set]
        mixed = any(c in MALIGNANT_CLASSES for c in in_set) and any(c not in MALIGNANT_CLASSES for c in in_set)
        assert ("malignant_not_ruled_out" in result.abstain_reasons) is mixed
        assert ("set_too_large" in result.abstain_reasons) is (len(in_set) > policy.max_set_size)
        assert result.abstain is bool(result.abstain_reasons)
        assert result.abstain_reason == (result.abstain_reasons[0] if result.abstain_reasons else None)
        if mixed:
            assert "cannot tell whether this lesion is malignant" in result.abstain_detail
        seen.update(result.abstain_reasons)
        assert result.malignant is not None and result.malignant_probability is not None
        assert result.malignant == (result.label in MALIGNANT_CLASSES)
    assert seen  # a model trained for seconds on drawings is unsure of some test images


def test_a_bad_image_is_reported_by_name_and_the_others_answered(served: Served) -> None:
    good = _uploads(served, "val", 2)
    uploads = [good[0], Upload("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"), Upload("empty.png", b""), good[1]]
    response = run_with_predictor(served, lambda p: p.predict(uploads, top_k=2))
    assert (response.succeeded, response.failed) == (2, 2)
    assert [r.status for r in response.results] == ["ok", "error", "error", "ok"]
    broken, empty = response.results[1], response.results[2]
    assert isinstance(broken, ImageError) and broken.file == "broken.jpg" and broken.detail
    assert isinstance(empty, ImageError) and empty.reason == "empty"
    assert all(len(r.top_k) == 2 for r in response.results if isinstance(r, ImagePrediction))


def test_no_usable_image_answers_errors_only(served: Served) -> None:
    response = run_with_predictor(served, lambda p: p.predict([Upload("a.txt", b"hello")]))
    assert response.succeeded == 0 and response.model_version is None
    assert isinstance(response.results[0], ImageError) and response.results[0].reason == "not_an_image"


@pytest.mark.parametrize(("count", "message"), [(0, "no images"), (9, "at most 8")])
def test_image_count_is_bounded(served: Served, count: int, message: str) -> None:
    uploads = [_noise(i) for i in range(count)]
    with pytest.raises(BadRequest, match=message):
        run_with_predictor(served, lambda p: p.predict(uploads))


def test_a_model_never_deployed_is_named(served: Served) -> None:
    with pytest.raises(NoLiveModel, match="no version of model 'nothing'"):
        run_with_predictor(served, lambda p: p.predict([_noise()], model="nothing"))


def test_abstains_on_noise_and_not_on_a_confident_in_distribution_image(served: Served) -> None:
    """The model was trained on generated lesions: noise is out of distribution, a lesion it knows is not."""
    candidates = _uploads(served, "train", 40)
    noise = [_noise(seed) for seed in range(3)]

    async def both(p: Predictor) -> tuple[PredictionResponse, PredictionResponse]:
        return await p.predict(candidates[:8]), await p.predict(noise)

    known: list[ImagePrediction] = []
    for start in range(0, len(candidates), 8):
        chunk = candidates[start : start + 8]
        response = run_with_predictor(served, lambda p, c=chunk: p.predict(c))  # type: ignore[misc]
        known += [r for r in response.results if isinstance(r, ImagePrediction)]
    confident = max(known, key=lambda r: r.top_k[0].probability)
    policy = served.exported.contract.abstention
    assert "out_of_distribution" not in confident.abstain_reasons
    assert confident.ood_score < policy.ood_threshold

    _, noisy = run_with_predictor(served, both)
    for result in noisy.results:
        assert isinstance(result, ImagePrediction)
        assert result.abstain and result.abstain_reason == "out_of_distribution"
        assert result.ood_score > policy.ood_threshold and "dermatologist" in result.abstain_detail


def test_explain_draws_the_graphs_class_activation_map_without_an_eager_model(served: Served) -> None:
    uploads = _uploads(served, "test", 2)
    size = served.run.trained.preprocessing.image_size
    response = run_with_predictor(served, lambda p: p.predict(uploads, explain=True))  # no Explainer at all
    for result in response.results:
        assert isinstance(result, ImagePrediction) and result.explanation_png
        overlay = Image.open(io.BytesIO(base64.b64decode(result.explanation_png)))
        assert overlay.format == "PNG" and overlay.size == (size, size)
    plain = run_with_predictor(served, lambda p: p.predict(uploads))
    assert all(isinstance(r, ImagePrediction) and r.explanation_png is None for r in plain.results)


def test_grad_cam_on_the_eager_model_where_the_graph_has_no_cam(served: Served) -> None:
    explainer = Explainer(served.registry.repository)
    image = load_rgb(_uploads(served, "test", 1)[0].data)
    png = explainer.explain(served.name, served.version, served.exported.contract.preprocessing, image, 0)
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_images_are_kept_stripped_only_when_retention_is_on(served: Served, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    uploads = [*_uploads(served, "test", 1), Upload("junk.bin", b"junk")]
    run_with_predictor(served, lambda p: p.predict(uploads), retention=Retention(store, days=0))
    assert store.list() == []
    response = run_with_predictor(served, lambda p: p.predict(uploads), retention=Retention(store, days=3))
    kept = store.list()
    assert len(kept) == 1 and kept[0].endswith(f"/{response.request_id}/0.png")
