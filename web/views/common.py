"""Lookups shared by the page and API views."""

from __future__ import annotations

from flask import abort, flash, request

from web.db import db_session
from web.filters import FilterError, ScanFilter
from worker.models import Job, Scan
from web.progress import Progress, progress
from web.queries import flagged_counts, status_counts
from worker.store import NotFound, get_job, scan_counts


def job_or_404(job_id: int) -> Job:
    """Return the job or answer 404."""
    try:
        return get_job(db_session(), job_id)
    except NotFound:
        abort(404)


def scan_or_404(scan_id: int) -> Scan:
    """Return the scan or answer 404."""
    scan = db_session().get(Scan, scan_id)
    if scan is None:
        abort(404)
    return scan


def page_filter() -> ScanFilter:
    """Return the request's report filter; a bad value is flashed and the default used instead."""
    try:
        return ScanFilter.from_args(request.args)
    except FilterError as exc:
        flash(str(exc), "error")
        return ScanFilter()


def job_progress(job: Job) -> Progress:
    """Return the job's live progress."""
    session = db_session()
    return progress(job, scan_counts(session, job.id), flagged_counts(session, [job])[job.id])


def job_states(jobs: list[Job]) -> dict[int, Progress]:
    """Return the live progress of several jobs, by id, in two queries plus one per job."""
    session = db_session()
    counts = status_counts(session, [job.id for job in jobs])
    flagged = flagged_counts(session, jobs)
    return {job.id: progress(job, counts[job.id], flagged[job.id]) for job in jobs}
