"""The scan page and its images, always looked up by id, never by a path from the request."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template, request, send_file

from web import images, overlays, queries
from web.series import place_in_series
from web.db import db_session
from web.views.common import page_filter, scan_or_404
from worker.models import Result

bp = Blueprint("scans", __name__)
MAX_AGE = 3600  # results never change under the same id; the original can be re-read after an hour
ARTIFACT_TYPES = {"overlay": "image/png", "thumbnail": "image/jpeg"}


@bp.get("/scans/<int:scan_id>")
def show(scan_id: int):
    """Show one scan: original, heatmap and overlay, probabilities, metadata, neighbours."""
    session = db_session()
    scan = scan_or_404(scan_id)
    frame = request.args.get("frame", 0, type=int)
    flt = page_filter()
    result = queries.result_for(session, scan.id, frame)
    prev, nxt = queries.neighbours(session, scan.job_id, flt, scan.id, frame)
    original = session.get(type(scan), scan.duplicate_of_id) if scan.duplicate_of_id else None
    return render_template("scan.html", scan=scan, job=scan.job, result=result, frame=frame,
                           prev=prev, next=nxt, filter_args=flt.to_args(), original=original,
                           info=images.safe_info(result.image_info if result else None),
                           overlay_problem=_prepare_overlay(result),
                           place=place_in_series(session, scan, frame))


def _prepare_overlay(result: Result | None) -> str | None:
    """Draw the result's overlay now if it is neither stored nor cached (the first view); return
    why it cannot be drawn, or None. The page's image request then finds it ready."""
    output_dir = Path(current_app.config["OUTPUT_DIR"])
    if result is None or overlays.stored_overlay(result, output_dir) is not None:
        return None
    try:
        overlays.overlay_bytes(result, output_dir)
    except overlays.OverlayUnavailable as exc:
        return str(exc)
    return None


def _result_or_404(result_id: int) -> Result:
    result = db_session().get(Result, result_id)
    if result is None:
        abort(404)
    return result


def _png(data: bytes) -> Response:
    response = Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = f"private, max-age={MAX_AGE}"
    return response


@bp.get("/results/<int:result_id>/overlay.png", defaults={"kind": "overlay"})
@bp.get("/results/<int:result_id>/thumbnail.jpg", defaults={"kind": "thumbnail"})
def artifact(result_id: int, kind: str):
    """Send a result's overlay (PNG: stored by an eager job, else drawn on demand and cached) or
    thumbnail (JPEG) from the output folder."""
    result = _result_or_404(result_id)
    if kind == "overlay" and overlays.stored_overlay(result, Path(current_app.config["OUTPUT_DIR"])) is None:
        return _drawn_overlay(result)
    try:
        path = images.inside(Path(current_app.config["OUTPUT_DIR"]), getattr(result, kind))
    except images.ImageMissing as exc:
        abort(404, description=str(exc))
    return send_file(path, mimetype=ARTIFACT_TYPES[kind], max_age=MAX_AGE, conditional=True)


def _drawn_overlay(result: Result) -> Response:
    """Send an on-demand overlay; a client that holds the same one (its ETag) gets 304 unasked."""
    tag = overlays.etag(result)
    if tag in request.if_none_match:
        response = Response(status=304)
    else:
        try:
            response = Response(overlays.overlay_bytes(result, Path(current_app.config["OUTPUT_DIR"])),
                                mimetype="image/png")
        except overlays.OverlayUnavailable as exc:
            abort(404, description=str(exc))
    response.set_etag(tag)
    # the same key always draws the same bytes: a browser may keep it as long as a stored file
    response.headers["Cache-Control"] = f"private, max-age={MAX_AGE}"
    return response


@bp.get("/results/<int:result_id>/heatmap.png")
def heatmap(result_id: int):
    """Render a result's raw heatmap in colour at the original image size."""
    result = _result_or_404(result_id)
    try:
        path = images.inside(Path(current_app.config["OUTPUT_DIR"]), result.heatmap)
        transparent = request.args.get("layer") == "1"
        return _png(images.heatmap_png(path, (result.width, result.height), transparent))
    except images.ImageMissing as exc:
        abort(404, description=str(exc))


@bp.get("/scans/<int:scan_id>/original.png")
def original(scan_id: int):
    """Read the scan from the job's folder and send it as PNG (DICOM windowed for display)."""
    scan = scan_or_404(scan_id)
    try:
        path = images.inside(Path(scan.job.root), scan.path)
        return _png(images.original_png(path, request.args.get("frame", 0, type=int), scan.sha256))
    except images.ImageMissing as exc:
        abort(404, description=str(exc))
