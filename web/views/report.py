"""The job report: summary, live progress, the filtered scan table, failures, neurons, downloads."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from web import queries
from web.charts import correlations_from_bytes, neuron_chart
from web.db import db_session
from web.filters import STATUSES
from web.progress import is_finished
from web.series import series_section
from web.views.common import job_or_404, job_progress, page_filter
from worker.export import model_threshold
from worker.models import Job

bp = Blueprint("report", __name__)
FAILURES_SHOWN = 50


def chart_for(job: Job):
    """Return the neuron chart of a finished job, or None before its statistics exist."""
    stats = job.neuron_stats
    if stats is None or not stats.correlations:
        return None
    return neuron_chart(correlations_from_bytes(stats.correlations))


@bp.get("/jobs/<int:job_id>")
def show(job_id: int):
    """Show a job's report."""
    session = db_session()
    job = job_or_404(job_id)
    flt = page_filter()
    page = queries.scan_rows(session, job.id, flt, request.args.get("page", 1, type=int),
                             current_app.config["REPORT_PAGE_SIZE"])
    failed, failed_total = queries.failures(session, job.id, FAILURES_SHOWN)
    series = series_section(session, job.id, model_threshold(job.model.spec),
                            request.args.get("series_page", 1, type=int),
                            current_app.config["SERIES_PAGE_SIZE"], current_app.config["SERIES_STRIP_CAP"])
    return render_template(
        "report.html", job=job, state=job_progress(job), finished=is_finished(job), page=page,
        flt=flt, filter_args=flt.to_args(), classes=job.model.spec.get("class_names", []),
        statuses=STATUSES, failed=failed, failed_total=failed_total, chart=chart_for(job),
        card=job.model.card or {}, ood=queries.ood_counts(session, job.id),
        section=series)
