"""Engineers: upload a dataset (with progress), see its classes, splits and sources, its per-file import
report, and for a synthesized dataset its class distribution before and after synthesis."""

from __future__ import annotations

import streamlit as st

from dermasynth.data.schemas import DatasetInfo, ImportReport
from dermasynth.gateway_client import GatewayClient, GatewayError
from dermasynth.jobs.records import JobRecord
from services.frontend.session import explain_refusal, signed_in

FORMATS = ["auto", "ham10000", "isic-csv", "imagefolder", "manifest"]


def show_report(report: ImportReport) -> None:
    seen, accepted, rejected = st.columns(3)
    seen.metric("Files seen", report.files_seen)
    accepted.metric("Accepted", report.accepted)
    rejected.metric("Rejected", report.rejected)
    if report.rejected_by_reason:
        st.markdown("**Rejected, by reason**")
        st.dataframe([{"reason": k, "files": v} for k, v in report.rejected_by_reason.items()], hide_index=True)
    if report.rejections:
        st.markdown("**Every rejected file**")
        st.dataframe(
            [{"file": r.file, "reason": r.reason.value, "detail": r.detail} for r in report.rejections],
            hide_index=True,
            width="stretch",
        )
    for warning in report.warnings:
        st.warning(warning)
    if report.missing_files:
        st.warning(f"{len(report.missing_files)} labelled images are missing: {', '.join(report.missing_files[:20])}")
    if report.duplicates:
        st.info(f"{len(report.duplicates)} groups of byte-identical images")


def upload_form(client: GatewayClient) -> None:
    archive = st.file_uploader("A .zip of the dataset folder", type=["zip"], key="dataset_zip")
    name = st.text_input("Name", key="dataset_name")
    fmt = st.selectbox("Layout", FORMATS, key="dataset_format")
    if not st.button("Upload", type="primary", disabled=archive is None or not name.strip()):
        return
    assert archive is not None
    bar = st.progress(0.0, text="uploading ...")

    def advance(sent: int, total: int) -> None:
        done = sent / total if total else 1.0
        bar.progress(min(done, 1.0), text=f"uploaded {sent / 1e6:.1f} of {total / 1e6:.1f} MB")

    def follow(job: JobRecord) -> None:
        phase = f": {job.progress.message or job.progress.phase}" if job.progress is not None else ""
        bar.progress(1.0, text=f"ingest job {job.id[:8]} {job.state.value}{phase}")

    try:
        archive.seek(0)
        with st.spinner("An ingest job checks every file ..."):
            info, report = client.upload_archive(
                archive,
                archive.name,
                name.strip(),
                size=archive.size,
                fmt=fmt,
                on_progress=advance,
                on_update=follow,
            )
    except GatewayError as exc:
        bar.empty()
        st.error(explain_refusal(exc))
        return
    bar.empty()
    st.success(f"Dataset {info.id} ({info.stats.images} images) imported")
    st.session_state["dataset_pick"] = info.id
    show_report(report)


def distribution(client: GatewayClient, info: DatasetInfo) -> None:
    classes = sorted(info.stats.classes)
    if info.parent_id:
        try:
            parent = client.dataset(info.parent_id)
        except GatewayError:
            parent = None
        if parent is not None:
            names = sorted(set(classes) | set(parent.stats.classes))
            st.markdown(f"**Images per class, before ({parent.name}) and after synthesis**")
            st.bar_chart(
                [
                    {"class": c, "before": parent.stats.classes.get(c, 0), "after": info.stats.classes.get(c, 0)}
                    for c in names
                ],
                x="class",
                y=["before", "after"],
                stack=False,
            )
    else:
        st.markdown("**Images per class**")
        st.bar_chart([{"class": c, "images": info.stats.classes[c]} for c in classes], x="class", y="images")
    left, right = st.columns(2)
    left.markdown("**Splits**")
    left.dataframe(
        [{"split": split, **counts} for split, counts in info.stats.splits.items()], hide_index=True, width="stretch"
    )
    right.markdown("**Sources**")
    right.dataframe([{"source": k, "images": v} for k, v in info.stats.sources.items()], hide_index=True)


def main() -> None:
    st.title("Datasets")
    client = signed_in("engineer")
    if client is None:
        return
    with client:
        with st.expander("Upload a dataset", expanded=False):
            upload_form(client)
        try:
            datasets = client.datasets()
        except GatewayError as exc:
            st.error(explain_refusal(exc))
            return
        if not datasets:
            st.info("No datasets yet: upload one above.")
            return
        st.dataframe(
            [
                {
                    "id": d.id,
                    "name": d.name,
                    "origin": d.origin,
                    "images": d.stats.images,
                    "classes": len(d.stats.classes),
                    "created": f"{d.created_at:%Y-%m-%d %H:%M}",
                }
                for d in datasets
            ],
            hide_index=True,
            width="stretch",
        )
        by_id = {d.id: d for d in datasets}
        if st.session_state.get("dataset_pick") not in by_id:
            st.session_state.pop("dataset_pick", None)
        picked = st.selectbox(
            "Dataset", list(by_id), format_func=lambda i: f"{by_id[i].name} ({i})", key="dataset_pick"
        )
        info = by_id[str(picked)]
        distribution(client, info)
        st.markdown("**Import report**")
        try:
            show_report(client.import_report(info.id))
        except GatewayError as exc:
            if exc.status != 404:
                st.error(explain_refusal(exc))
            else:
                st.caption(f"No import report: this dataset was made by {info.origin} job {info.job_id or ''}.")


main()
