"""Engineers: served models, their versions with lineage and metrics, which one is live; export a finished
training job as a new version, deploy a version, roll back."""

from __future__ import annotations

import streamlit as st

from dermasynth.gateway_client import GatewayClient, GatewayError
from dermasynth.jobs.records import JobRecord
from services.frontend.job_views import job_label
from services.frontend.session import explain_refusal, signed_in

DEFAULT_MODEL = "classifier"
NOTICE = "models_notice"


def export_form(client: GatewayClient) -> None:
    trainings = client.jobs(kind="training", state="succeeded", limit=100).jobs
    if not trainings:
        st.caption("No succeeded training job to export yet.")
        return
    labels = {job.id: job_label(job) for job in trainings}
    with st.form("export"):
        job_id = st.selectbox("Training job", list(labels), format_func=labels.__getitem__, key="export_job")
        name = st.text_input("Model name", value=DEFAULT_MODEL, key="export_name")
        submitted = st.form_submit_button("Export as a new version")
    if submitted:
        try:
            with st.spinner("Exporting (checked against the trained model) ..."):
                exported = client.export_model(str(job_id), name=name.strip())
                if isinstance(exported, JobRecord):  # the gateway queued the export as a job
                    done = client.wait(exported.id, poll_s=1.0)
                    if done.state.value != "succeeded":
                        st.error(f"The export job {done.id} {done.state.value}: {done.error or ''}")
                        return
                    version = client.model_version(name.strip(), int(done.result["version"]))
                else:
                    version = exported
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
        st.session_state["model_pick"] = version.name
        st.success(f"{version.name} version {version.version} exported; deploy it below to make it live")


def versions(client: GatewayClient, name: str) -> None:
    detail = client.model(name)
    if NOTICE in st.session_state:
        st.success(st.session_state.pop(NOTICE))
    live = detail.live.version
    st.markdown(f"**Live version: {live if live is not None else 'none'}**")
    st.dataframe(
        [
            {
                "version": v.version,
                "live": "live" if v.version == live else "",
                "created": f"{v.created_at:%Y-%m-%d %H:%M}",
                "architecture": v.architecture,
                "image size": v.image_size,
                "dataset": v.lineage.dataset or "",
                "training job": v.lineage.job_id or "",
                **{k: round(m, 4) for k, m in sorted(v.lineage.metrics.items())},
            }
            for v in sorted(detail.versions, key=lambda v: v.version, reverse=True)
        ],
        hide_index=True,
        width="stretch",
    )
    numbers = sorted((v.version for v in detail.versions), reverse=True)
    left, right = st.columns(2)
    with left:
        version = st.selectbox("Version", numbers, key=f"deploy_version_{name}")
        if st.button("Deploy this version", type="primary", key=f"deploy_{name}"):
            try:
                with st.spinner(f"Loading version {version} beside the live one ..."):
                    now = client.deploy(name, int(version))
                st.session_state[NOTICE] = f"{name} version {now.version} is live"
                st.rerun()  # the table and the live version again, from the gateway
            except GatewayError as exc:
                st.error(explain_refusal(exc))
    with right:
        st.write("")
        if st.button(
            "Roll back to the previous version", key=f"rollback_{name}", disabled=len(detail.live.history) < 2
        ):
            try:
                now = client.rollback(name)
                st.session_state[NOTICE] = f"{name} version {now.version} is live again"
                st.rerun()
            except GatewayError as exc:
                st.error(explain_refusal(exc))
    if detail.live.history:
        with st.expander("Deployment history"):
            st.dataframe(
                [
                    {
                        "at": f"{h.at:%Y-%m-%d %H:%M:%S}",
                        "action": h.action,
                        "version": h.version,
                        "previous": h.previous,
                    }
                    for h in reversed(detail.live.history)
                ],
                hide_index=True,
            )


def main() -> None:
    st.title("Models")
    client = signed_in("engineer")
    if client is None:
        return
    with client:
        try:
            with st.expander("Export a training job's model", expanded=False):
                export_form(client)
            names = [m.name for m in client.models()]
            if not names:
                st.info("No model registered yet: export a succeeded training job above.")
                return
            if st.session_state.get("model_pick") not in names:
                st.session_state.pop("model_pick", None)
            name = str(st.selectbox("Model", names, key="model_pick"))
            versions(client, name)
        except GatewayError as exc:
            st.error(explain_refusal(exc))


main()
