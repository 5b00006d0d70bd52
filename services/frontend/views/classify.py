"""Clinicians: drop in a patient's lesion photos, read a summary table, then one card per photo.

Results stay in the session until the next "Classify" (changing an option does not wipe them); photos
are matched to answers by upload position; any number of photos is sent in chunks with a progress bar.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import streamlit as st

from dermasynth.gateway_client import GatewayError
from dermasynth.serving.schemas import DISCLAIMER, ImageError, ImagePrediction
from services.frontend.predictions import (
    ACCEPTED_TYPES,
    MALIGNANT_NAMES,
    UNSURE,
    Outcome,
    decided,
    predict_all,
    prediction_set,
    prepare,
    printable_summary,
    reason_text,
    summary_csv,
    summary_rows,
)
from services.frontend.session import explain_refusal, settings, signed_in

RESULTS = "classify_results"
NOT_USABLE_TITLE = "Cannot be used"
REJECTED_WORDS = {
    "empty": "the file is empty",
    "not_an_image": "this file is not a picture",
    "truncated": "the picture is incomplete (cut off while copying?)",
    "unreadable": "the picture is damaged",
    "grayscale": "the picture is black and white; a colour photo is needed",
    "cmyk": "the picture uses print colours (CMYK); a normal colour photo is needed",
    "unsupported_mode": "the picture's colour format is not supported",
    "too_large": "the picture is too large",
    "too_small": "the picture is too small to judge",
}


def show_card(outcome: Outcome, explained: bool) -> None:
    result = outcome.result
    picture, answer = st.columns([1, 2])
    if outcome.thumbnail:
        picture.image(outcome.thumbnail, caption=f"#{outcome.position} {outcome.name}", width="stretch")
    else:
        picture.markdown(f"**#{outcome.position} {outcome.name}**")
    if isinstance(result, ImageError):
        words = REJECTED_WORDS.get(result.reason.value, result.reason.value.replace("_", " "))
        answer.error(f"{NOT_USABLE_TITLE}: {words}. Take the photo again or send it in another format.")
        return
    if result.abstain:
        answer.error(f"{UNSURE}. {reason_text(result)}")
    else:
        answer.success(f"Most likely: {decided(result)}")
    members = prediction_set(result)
    if members:
        coverage = f" (it holds the right one {result.set_coverage:.0%} of the time)" if result.set_coverage else ""
        answer.markdown(f"**Possible kinds of lesion**{coverage}: {', '.join(members)}")
    if result.malignant_probability is not None:
        answer.markdown(f"**Chance it is malignant** ({MALIGNANT_NAMES}): {result.malignant_probability:.0%}")
    for item in result.top_k:
        answer.progress(item.probability, text=f"{item.name} ({item.label}): {item.probability:.0%}")
    calibrated = "; calibrated probabilities" if result.calibrated else ""
    answer.caption(f"model {result.model} version {result.model_version}{calibrated}")
    if explained and result.explanation_png:
        answer.image(base64.b64decode(result.explanation_png), caption="Where the model looked (Grad-CAM)", width=224)


def show_results(outcomes: list[Outcome], explained: bool) -> None:
    answered = [o for o in outcomes if isinstance(o.result, ImagePrediction)]
    st.subheader(f"{len(answered)} of {len(outcomes)} photos answered")
    rows = summary_rows(outcomes)
    st.dataframe(rows, hide_index=True, width="stretch")
    patient = st.text_input("Patient reference for the printable summary (optional)", key="patient")
    model = next(
        (f"{o.result.model} v{o.result.model_version}" for o in answered if isinstance(o.result, ImagePrediction)), ""
    )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    left, right = st.columns(2)
    left.download_button(
        "Download the table (CSV)", summary_csv(rows), file_name=f"dermasynth-{stamp}.csv", mime="text/csv"
    )
    right.download_button(
        "Printable summary (HTML)",
        printable_summary(rows, patient, model),
        file_name=f"dermasynth-{stamp}.html",
        mime="text/html",
    )
    for outcome in outcomes:
        st.divider()
        show_card(outcome, explained)


def main() -> None:
    st.title("Classify lesion photos")
    st.warning(DISCLAIMER, icon=":material/warning:")
    client = signed_in("clinician")
    if client is None:
        return
    with st.sidebar:
        st.caption(DISCLAIMER)  # the sidebar stays in view while the cards scroll
        top_k = st.slider("Classes to show per photo", min_value=1, max_value=7, value=3)
        explain = st.checkbox("Show where the model looked (heat maps)", value=False)
    files = st.file_uploader(
        "Lesion photos (dermoscopic close-ups; JPEG, PNG, HEIC from phones, ...)",
        type=ACCEPTED_TYPES,
        accept_multiple_files=True,
        key="photos",
    )
    if st.button("Classify", type="primary", disabled=not files):
        images = [prepare(i + 1, f.name, f.getvalue()) for i, f in enumerate(files or [])]
        bar = st.progress(0.0, text=f"Sending {len(images)} photos ...")

        def advance(done: int, total: int) -> None:
            bar.progress(done / total, text=f"{done} of {total} photos answered")

        chunk = settings().frontend_prediction_chunk
        try:
            with client:
                outcomes = predict_all(client, images, chunk=chunk, top_k=top_k, explain=explain, on_progress=advance)
        except GatewayError as exc:
            bar.empty()
            st.error(explain_refusal(exc))
            return
        bar.empty()
        st.session_state[RESULTS] = (outcomes, explain)
    else:
        client.close()
    saved = st.session_state.get(RESULTS)
    if saved:
        show_results(*saved)


main()
