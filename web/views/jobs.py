"""Pages: the jobs list, starting a job (folder browser or upload), cancel and resume."""

from __future__ import annotations

from pathlib import Path

from flask import (Blueprint, current_app, flash, redirect, render_template, request,
                   url_for)
from flask_login import current_user

from web import queries, starting
from web.db import db_session, session_factory
from web.folders import FolderError, list_folder, resolve
from web.uploads import UploadError, UploadLimits, store_uploads
from web.views.common import job_or_404, job_states

bp = Blueprint("jobs", __name__)
JOBS_PER_PAGE = 25


@bp.get("/")
def home():
    """Send visitors to the jobs list."""
    return redirect(url_for("jobs.index"))


@bp.get("/jobs")
def index():
    """List jobs, newest first, with their live progress."""
    page = queries.job_page(db_session(), request.args.get("page", 1, type=int), JOBS_PER_PAGE)
    return render_template("jobs.html", page=page, states=job_states(page.rows))


def _listing():
    """Return the folder listing asked for by ``root`` and ``path``, or None with a flash."""
    roots = current_app.config["SCAN_ROOTS"]
    if not roots:
        return None
    try:
        return list_folder(roots, request.args.get("root", 0, type=int), request.args.get("path", ""))
    except FolderError as exc:
        flash(str(exc), "error")
        return list_folder(roots, 0, "") if Path(roots[0]).is_dir() else None


@bp.get("/jobs/new")
def new():
    """Show the folder browser, the upload form and the model and method choices."""
    config = current_app.config
    return render_template(
        "new_job.html", listing=_listing(), roots=config["SCAN_ROOTS"],
        models=starting.model_choices(db_session(), Path(config["DEFAULT_MODEL"])),
        methods=[(m, starting.METHOD_LABELS[m]) for m in starting.METHODS],
        broker=bool(config.get("BROKER_URL")), no_broker=starting.NO_BROKER)


def _checked_spec():
    """Return the chosen model's spec if the form's choices can start a job (else flash why)."""
    config = current_app.config
    try:
        return starting.check_start(db_session(), request.form.get("model", ""),
                                    request.form.get("method", ""), config.get("BROKER_URL"),
                                    Path(config["DEFAULT_MODEL"]))
    except starting.StartError as exc:
        flash(str(exc), "error")
        return None


def _launch(root: Path, spec):
    """Record and queue a job over ``root``, then show its report."""
    try:
        job_id = starting.launch(db_session(), root, spec, request.form["method"], current_user.id,
                                 current_app.config["BROKER_URL"])
    except starting.StartError as exc:
        flash(str(exc), "error")
        return redirect(url_for("jobs.index"))
    flash(f"Job {job_id} is queued.", "info")
    return redirect(url_for("report.show", job_id=job_id))


@bp.post("/jobs")
def create():
    """Start a job over a folder chosen in the browser."""
    try:
        _, folder = resolve(current_app.config["SCAN_ROOTS"], request.form.get("root", -1, type=int),
                            request.form.get("path", ""))
    except FolderError as exc:
        flash(str(exc), "error")
        return redirect(url_for("jobs.new"))
    spec = _checked_spec()
    return _launch(folder, spec) if spec else redirect(url_for("jobs.new"))


def upload_limits() -> UploadLimits:
    """Return the upload limits from the app configuration."""
    config = current_app.config
    return UploadLimits(config["UPLOAD_MAX_FILE_BYTES"], config["UPLOAD_MAX_TOTAL_BYTES"],
                        config["UPLOAD_MAX_ENTRIES"])


@bp.post("/jobs/upload")
def upload():
    """Store uploaded scans in a new folder and start a job over it."""
    spec = _checked_spec()  # refuse before writing anything
    if spec is None:
        return redirect(url_for("jobs.new"))
    try:
        stored = store_uploads(request.files.getlist("scans"), Path(current_app.config["UPLOAD_DIR"]),
                               upload_limits())
    except UploadError as exc:
        flash(str(exc), "error")
        return redirect(url_for("jobs.new"))
    if stored.skipped:
        flash(f"Kept {stored.kept} scans; skipped {len(stored.skipped)} other files.", "info")
    return _launch(stored.folder, spec)


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    """Cancel a job: its pending scans are skipped by the workers."""
    job_or_404(job_id)
    try:
        starting.cancel(db_session(), job_id)
        flash(f"Job {job_id} is cancelled.", "info")
    except starting.StartError as exc:
        flash(str(exc), "error")
    return redirect(url_for("report.show", job_id=job_id))


@bp.post("/jobs/<int:job_id>/resume")
def resume(job_id: int):
    """Queue a job's unfinished scans again."""
    job_or_404(job_id)
    try:
        starting.resume(db_session(), job_id, current_app.config.get("BROKER_URL"), session_factory())
        flash(f"Job {job_id} is queued again.", "info")
    except starting.StartError as exc:
        flash(str(exc), "error")
    return redirect(url_for("report.show", job_id=job_id))
