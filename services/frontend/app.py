"""DermaSynth for clinicians: ``streamlit run services/frontend/app.py``.

Upload one or many dermoscopic images; for each one the page shows the most likely lesion classes
with their probabilities, a clear "unsure, see a dermatologist" flag when the model abstains and why,
and on request a Grad-CAM heat map of what the model looked at. It is not a diagnosis.
"""

from __future__ import annotations

import base64
import os

import streamlit as st

from dermasynth.gateway_client import (
    DEFAULT_GATEWAY_URL,
    ENV_API_KEY,
    ENV_GATEWAY_URL,
    GatewayClient,
    GatewayError,
    ImageFile,
)
from dermasynth.serving.schemas import DISCLAIMER, ImageError, ImagePrediction, PredictionResponse

ACCEPTED = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"]
REASONS = {
    "low_confidence": "the model is unsure between classes",
    "out_of_distribution": "the image looks unlike the images the model was trained on",
}


def show_prediction(result: ImagePrediction, data: bytes) -> None:
    picture, answer = st.columns([1, 2])
    picture.image(data, caption=result.file, width="stretch")
    if result.abstain:
        answer.error(
            f"Unsure: see a dermatologist. {REASONS.get(result.abstain_reason or '', '')}. {result.abstain_detail}"
        )
    else:
        top = result.top_k[0]
        answer.success(f"Most likely: {top.name} ({top.label}), {top.probability:.0%}")
    for item in result.top_k:
        answer.progress(item.probability, text=f"{item.name} ({item.label}): {item.probability:.1%}")
    answer.caption(f"model {result.model} version {result.model_version}; OOD score {result.ood_score:.1f}")
    if result.explanation_png:
        answer.image(base64.b64decode(result.explanation_png), caption="Grad-CAM: where the model looked", width=224)


def show_response(response: PredictionResponse, uploads: dict[str, bytes]) -> None:
    st.subheader(f"{response.succeeded} of {response.succeeded + response.failed} images answered")
    for result in response.results:
        if isinstance(result, ImageError):
            st.error(f"{result.file}: cannot be used ({result.reason.value}): {result.detail}")
        else:
            show_prediction(result, uploads.get(result.file, b""))
        st.divider()


def main() -> None:
    st.set_page_config(page_title="DermaSynth", layout="wide")
    st.title("DermaSynth lesion classifier")
    st.warning(DISCLAIMER)
    with st.sidebar:
        gateway_url = st.text_input("Gateway", value=os.environ.get(ENV_GATEWAY_URL, DEFAULT_GATEWAY_URL))
        api_key = st.text_input("API key", value=os.environ.get(ENV_API_KEY, ""), type="password")
        top_k = st.slider("Classes to show", min_value=1, max_value=7, value=3)
        explain = st.checkbox("Show heat maps (Grad-CAM)", value=False)
    files = st.file_uploader("Dermoscopic images", type=ACCEPTED, accept_multiple_files=True)
    if not st.button("Predict", type="primary", disabled=not files):
        return
    images = [ImageFile(f.name, f.getvalue(), f.type or "application/octet-stream") for f in files or []]
    try:
        with st.spinner("Asking the model..."), GatewayClient(gateway_url, api_key) as gateway:
            response = gateway.predict(images, top_k=top_k, explain=explain)
    except GatewayError as exc:
        status = f", HTTP {exc.status}" if exc.status else ""
        st.error(f"The gateway did not answer ({exc.reason}{status}): {exc.detail}")
        return
    show_response(response, {image.name: image.data for image in images})


main()
