"""Engineers: submit synthesis, training, evaluation and experiment jobs, and watch them run.

The form of each kind is built from the gateway's request schema; the selected job's progress (epoch,
step, ETA, metrics so far), its log and a cancel button refresh every two seconds until it finishes.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dermasynth.gateway_client import GatewayClient, GatewayError
from dermasynth.jobs.records import JobRecord
from services.frontend.forms import job_kinds, render
from services.frontend.job_views import fraction, progress_text
from services.frontend.session import explain_refusal, signed_in

WATCH = "job_watch"
REFRESH_S = 2.0
LOG_LINES = 200


def submit_form(client: GatewayClient) -> None:
    document = client.openapi()
    kinds = job_kinds(document)
    datasets = [d.id for d in client.datasets()]
    trainings = [j.id for j in client.jobs(kind="training", state="succeeded", limit=100).jobs]
    kind = st.selectbox("Kind", list(kinds), key="job_kind")
    schema = kinds[kind]
    if schema.get("description"):
        st.caption(schema["description"])
    errors: list[str] = []
    with st.form(f"job-form-{kind}"):
        params = render(
            schema,
            document,
            key=f"job.{kind}",
            choices={"dataset_id": datasets, "training_job_id": trainings},
            errors=errors,
        )
        submitted = st.form_submit_button("Submit", type="primary")
    if not submitted:
        return
    if errors:
        st.error("Fix these fields: " + "; ".join(errors))
        return
    try:
        record = client.submit(kind, params)
    except GatewayError as exc:
        st.error(explain_refusal(exc))
        return
    st.session_state[WATCH] = record.id  # the new job is the one watched
    st.success(f"Submitted {kind} job {record.id}")


def job_table(page: list[JobRecord]) -> None:
    rows = [
        {
            "id": job.id,
            "kind": job.kind.value,
            "state": job.state.value,
            "progress": progress_text(job),
            "created": f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        }
        for job in page
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


def job_detail(job_id: str) -> None:
    client = signed_in("engineer")
    if client is None:
        return
    with client:
        try:
            record = client.job(job_id)
            log = client.logs(job_id, since=0)
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
        st.markdown(f"#### {record.kind.value} job `{record.id}`")
        status = st.empty()
        text = progress_text(record)
        if record.state.value == "succeeded":
            status.success(text)
        elif record.state.value in ("failed", "cancelled"):
            status.error(f"{text}: {record.error or ''}")
        else:
            st.progress(fraction(record.progress), text=text)
        metrics: dict[str, Any] = {}
        if record.progress is not None:
            metrics.update(record.progress.metrics)
        metrics.update(record.result.get("metrics", {}) if isinstance(record.result.get("metrics"), dict) else {})
        if metrics:
            st.markdown("**Metrics so far**" if not record.terminal else "**Metrics**")
            st.dataframe(
                [
                    {"metric": k, "value": f"{v:.4g}" if isinstance(v, float) else str(v)}
                    for k, v in metrics.items()
                    if isinstance(v, int | float | str)
                ],
                hide_index=True,
            )
        if record.result:
            with st.expander("Result"):
                st.json(record.result)
        if not record.terminal and st.button("Cancel this job", key=f"cancel-{record.id}"):
            try:
                client.cancel(record.id)
                st.info("Cancel requested: the job stops at its next step and keeps its last checkpoint.")
            except GatewayError as exc:
                st.error(explain_refusal(exc))
        with st.expander(f"Log ({log.next} lines)", expanded=not record.terminal):
            st.code("\n".join(log.lines[-LOG_LINES:]) or "(no log lines yet)", language=None)
    if record.terminal and st.session_state.get("jobs_live") == record.id:
        st.session_state["jobs_live"] = None
        st.rerun()  # the whole page once more: the table shows the final state and refreshing stops


def main() -> None:
    st.title("Jobs")
    client = signed_in("engineer")
    if client is None:
        return
    with client:
        try:
            with st.expander("Submit a job", expanded=True):
                submit_form(client)
            page = client.jobs(limit=50).jobs
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
    if not page:
        st.info("No jobs yet.")
        return
    job_table(page)
    ids = [job.id for job in page]
    labels = {job.id: f"{job.kind.value} {job.id[:8]} ({job.created_at:%Y-%m-%d %H:%M})" for job in page}
    if st.session_state.get(WATCH) not in ids:
        st.session_state.pop(WATCH, None)
    job_id = str(st.selectbox("Watch job", ids, format_func=labels.__getitem__, key=WATCH))
    record = next(job for job in page if job.id == job_id)
    live = not record.terminal
    st.session_state["jobs_live"] = job_id if live else None
    st.fragment(job_detail, run_every=REFRESH_S if live else None)(job_id)


main()
