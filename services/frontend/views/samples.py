"""Engineers: the GAN's sample grids per class, from a synthesis (or experiment) job, at any saved step."""

from __future__ import annotations

import streamlit as st

from dermasynth.gateway_client import GatewayError
from services.frontend.artefacts import OVERVIEW, grid_steps
from services.frontend.job_views import job_label
from services.frontend.session import explain_refusal, signed_in


def main() -> None:
    st.title("GAN samples")
    client = signed_in("engineer")
    if client is None:
        return
    with client:
        try:
            jobs = [*client.jobs(kind="synthesis", limit=100).jobs, *client.jobs(kind="experiment", limit=100).jobs]
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
        if not jobs:
            st.info("No synthesis job yet: submit one on the Jobs page.")
            return
        labels = {job.id: job_label(job) for job in jobs}
        job_id = str(st.selectbox("Job", list(labels), format_func=labels.__getitem__, key="samples_job"))
        try:
            steps = grid_steps(client.artefacts(job_id))
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
        if not steps:
            st.info("This job has no sample grids yet (they appear every grid_every steps).")
            return
        step = st.select_slider(
            "Training step",
            options=sorted(steps),
            value=max(steps),
            format_func=lambda s: "final" if s == 0 else str(s),
        )
        grids = steps[int(step)]
        if OVERVIEW in grids:
            st.image(client.download(job_id, grids[OVERVIEW]), caption="one row per class", width="stretch")
        classes = sorted(c for c in grids if c != OVERVIEW)
        columns = st.columns(min(4, max(1, len(classes))))
        for i, label in enumerate(classes):
            columns[i % len(columns)].image(client.download(job_id, grids[label]), caption=label, width="stretch")


main()
