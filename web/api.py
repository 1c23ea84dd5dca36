"""The JSON API under ``/api/``: the same data as the pages, described at ``/api/openapi.json``."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, request, stream_with_context
from flask_login import current_user

from web import exporting, queries, serialize, starting
from web.db import db_session, session_factory
from web.filters import FilterError, ScanFilter
from web.folders import FolderError, list_folder, resolve
from web.openapi import openapi_document
from web.views.common import job_or_404, job_progress, job_states, scan_or_404
from worker.export import export_rows

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_PER_PAGE = 500


def bad_request(message: str, status: int = 400):
    return jsonify(error=message, status=status), status


def _per_page(default: int) -> int:
    return min(max(request.args.get("per_page", default, type=int), 1), MAX_PER_PAGE)


@bp.get("/openapi.json")
def openapi():
    """Describe the API (OpenAPI 3)."""
    return jsonify(openapi_document())


@bp.get("/jobs")
def jobs():
    """List jobs, newest first."""
    page = queries.job_page(db_session(), request.args.get("page", 1, type=int), _per_page(25))
    states = job_states(page.rows)
    items = [serialize.job_json(j, states[j.id]) for j in page.rows]
    return jsonify(serialize.page_json(page, "jobs", items))


@bp.post("/jobs")
def start():
    """Start a job over a folder under a scan root."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return bad_request('Send a JSON object such as {"root": 0, "path": "sub/folder", '
                           '"model": "default", "method": "gradcam"}.')
    config = current_app.config
    method = str(body.get("method", starting.METHODS[0]))
    try:
        _, folder = resolve(config["SCAN_ROOTS"], _int(body.get("root", 0)), str(body.get("path", "")))
        spec = starting.check_start(db_session(), str(body.get("model", starting.DEFAULT_KEY)), method,
                                    config.get("BROKER_URL"), Path(config["DEFAULT_MODEL"]))
        job_id = starting.launch(db_session(), folder, spec, method, current_user.id,
                                 config["BROKER_URL"])
    except (FolderError, starting.StartError) as exc:
        status = 503 if not config.get("BROKER_URL") else 400
        return bad_request(str(exc), status)
    job = job_or_404(job_id)
    return jsonify(serialize.job_json(job, job_progress(job))), 201


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FolderError("root must be the number of a scan root.") from None


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    """Return a job and its progress."""
    found = job_or_404(job_id)
    return jsonify(serialize.job_json(found, job_progress(found)))


@bp.get("/jobs/<int:job_id>/scans")
def job_scans(job_id: int):
    """Return one page of the job's report rows, filtered and sorted like the report page."""
    job_or_404(job_id)
    try:
        flt = ScanFilter.from_args(request.args)
    except FilterError as exc:
        return bad_request(str(exc))
    page = queries.scan_rows(db_session(), job_id, flt, request.args.get("page", 1, type=int),
                             _per_page(current_app.config["REPORT_PAGE_SIZE"]))
    return jsonify(serialize.page_json(page, "rows", [serialize.row_json(r) for r in page.rows]))


@bp.get("/jobs/<int:job_id>/neurons")
def neurons(job_id: int):
    """Return the neurons most correlated with the class (404 until the job has statistics)."""
    found = job_or_404(job_id)
    if found.neuron_stats is None:
        abort(404, description="This job has no neuron statistics yet; they appear when it finishes.")
    top = min(max(request.args.get("top", 10, type=int), 1), 1000)
    return jsonify(serialize.neurons_json(found.neuron_stats, top))


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    """Cancel a job."""
    job_or_404(job_id)
    try:
        starting.cancel(db_session(), job_id)
    except starting.StartError as exc:
        return bad_request(str(exc), 409)
    return job(job_id)


@bp.post("/jobs/<int:job_id>/resume")
def resume(job_id: int):
    """Queue a job's unfinished scans again."""
    job_or_404(job_id)
    try:
        starting.resume(db_session(), job_id, current_app.config.get("BROKER_URL"), session_factory())
    except starting.StartError as exc:
        return bad_request(str(exc), 503)
    return job(job_id)


@bp.get("/jobs/<int:job_id>/export")
def export(job_id: int):
    """Download every scan's record as CSV or JSON, streamed from the store."""
    found = job_or_404(job_id)
    fmt = request.args.get("format", "csv")
    if fmt not in exporting.MIMETYPES:
        return bad_request("format must be csv or json.")
    rows = export_rows(db_session(), job_id, current_app.config["OUTPUT_DIR"])
    chunks = (exporting.json_chunks(rows) if fmt == "json"
              else exporting.csv_chunks(rows, list(found.model.spec["class_names"])))
    response = Response(stream_with_context(chunks), mimetype=exporting.MIMETYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="tumorlens-job-{job_id}.{fmt}"'
    return response


@bp.get("/scans/<int:scan_id>")
def scan(scan_id: int):
    """Return a scan with its analysed frames."""
    return jsonify(serialize.scan_json(scan_or_404(scan_id)))


@bp.get("/folders")
def folders():
    """List one folder of a scan root: sub-folders and scan-file counts."""
    try:
        listing = list_folder(current_app.config["SCAN_ROOTS"], request.args.get("root", 0, type=int),
                              request.args.get("path", ""))
    except FolderError as exc:
        return bad_request(str(exc))
    return jsonify(serialize.listing_json(listing))


@bp.get("/models")
def models():
    """List the models and CAM methods a job can use."""
    choices = starting.model_choices(db_session(), Path(current_app.config["DEFAULT_MODEL"]))
    return jsonify(models=[{"key": c.key, "label": c.label} for c in choices],
                   methods=[{"key": m, "label": starting.METHOD_LABELS[m]} for m in starting.METHODS])
