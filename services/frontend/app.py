"""DermaSynth's web app: ``cd services/frontend && streamlit run app.py`` (``make up`` starts it).

One page for clinicians (classify photos) and five for ML engineers (datasets, jobs, GAN samples,
experiments, models). Every page talks only to the gateway, through the library's one client
(:mod:`dermasynth.gateway_client`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # `streamlit run app.py` from services/frontend: the repo's packages first
    sys.path.insert(0, str(_REPO))

from services.frontend.session import sidebar_account  # noqa: E402

PAGES = Path(__file__).resolve().parent / "views"


def main() -> None:
    st.set_page_config(page_title="DermaSynth", page_icon=":material/dermatology:", layout="wide")
    navigation = st.navigation(
        {
            "Clinicians": [st.Page(PAGES / "classify.py", title="Classify photos", icon=":material/photo_camera:")],
            "Engineers": [
                st.Page(PAGES / "datasets.py", title="Datasets", icon=":material/dataset:"),
                st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/play_circle:"),
                st.Page(PAGES / "samples.py", title="GAN samples", icon=":material/grid_view:"),
                st.Page(PAGES / "experiments.py", title="Experiments", icon=":material/science:"),
                st.Page(PAGES / "models.py", title="Models", icon=":material/deployed_code:"),
            ],
        }
    )
    sidebar_account()
    navigation.run()


main()
