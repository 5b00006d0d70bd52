"""Engineers: an experiment's report (its tables, as the job wrote them) and its figures."""

from __future__ import annotations

import re

import streamlit as st

from dermasynth.gateway_client import GatewayError
from services.frontend.artefacts import report_files
from services.frontend.job_views import job_label, progress_text
from services.frontend.session import explain_refusal, signed_in

_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\([^)]*\)")


def main() -> None:
    st.title("Experiments")
    client = signed_in("engineer")
    if client is None:
        return
    with client:
        try:
            jobs = client.jobs(kind="experiment", limit=100).jobs
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
        if not jobs:
            st.info("No experiment yet: submit one on the Jobs page (kind: experiment).")
            return
        labels = {job.id: job_label(job) for job in jobs}
        job_id = str(st.selectbox("Experiment", list(labels), format_func=labels.__getitem__, key="experiment_job"))
        record = next(job for job in jobs if job.id == job_id)
        if not record.terminal:
            st.info(f"Still running: {progress_text(record)}. The report appears when it finishes.")
        try:
            markdown, figures = report_files(client.artefacts(job_id))
            if markdown is None:
                st.info("This experiment has no report (yet).")
                return
            text = client.download(job_id, markdown).decode("utf-8", errors="replace")
            st.markdown(_IMAGE_LINK.sub("", text))  # figures are shown below, from the gateway
            for path in figures:
                st.image(client.download(job_id, path), caption=path.rsplit("/", 1)[-1], width="stretch")
        except GatewayError as exc:
            st.error(explain_refusal(exc))


main()
