"""The JSON shapes of the API: jobs, report rows, scans with their results, neurons, folders."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import url_for

from web.charts import correlations_from_bytes, top_neurons
from web.folders import Listing
from web.progress import Progress, aware, is_finished
from web.queries import Page
from worker.export import is_out_of_distribution
from worker.models import Job, NeuronStats, Result, Scan


def iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else aware(moment).isoformat()


def job_json(job: Job, state: Progress) -> dict[str, Any]:
    """Return a job with its progress."""
    return {
        "id": job.id, "status": job.status.value, "finished": is_finished(job), "root": job.root,
        "model": {"id": job.model.id, "name": job.model.name, "digest": job.model.digest},
        "method": job.method, "label_source": job.label_source, "error": job.error,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "progress": state.as_dict(),
        "links": {"report": url_for("report.show", job_id=job.id),
                  "scans": url_for("api.job_scans", job_id=job.id)},
    }


def ood_json(ood_score: float | None) -> dict[str, Any]:
    """Return the distance from the model's training data over its limit, and whether it is outside."""
    return {"ood_score": ood_score, "out_of_distribution": is_out_of_distribution(ood_score)}


def row_json(row: Any) -> dict[str, Any]:
    """Return one report row (a scan, or one frame of it)."""
    links = {"page": url_for("scans.show", scan_id=row.scan_id, frame=row.frame),
             "scan": url_for("api.scan", scan_id=row.scan_id)}
    if row.result_id is not None:
        links["thumbnail"] = url_for("scans.artifact", result_id=row.result_id, kind="thumbnail")
    return {"scan_id": row.scan_id, "frame": row.frame, "path": row.path,
            "status": row.status.value, "error": row.error, "duplicate_of": row.duplicate_of_id,
            "predicted_class": row.predicted_class, "tumor_probability": row.tumor_probability,
            **ood_json(row.ood_score), "links": links}


def page_json(page: Page, key: str, items: list[dict]) -> dict[str, Any]:
    return {key: items, "total": page.total, "page": page.page, "pages": page.pages,
            "per_page": page.per_page}


def result_json(scan: Scan, result: Result) -> dict[str, Any]:
    """Return one analysed frame with links to its images."""
    return {
        "frame": result.frame, "width": result.width, "height": result.height,
        "predicted_class": result.predicted_class, "tumor_probability": result.tumor_probability,
        "probabilities": result.probabilities, "method": result.method,
        "peak": [result.peak_x, result.peak_y], "image_info": result.image_info or {},
        **ood_json(result.ood_score),
        "links": {kind: url_for("scans.artifact", result_id=result.id, kind=kind)
                  for kind in ("overlay", "thumbnail")}
        | {"heatmap": url_for("scans.heatmap", result_id=result.id),
           "original": url_for("scans.original", scan_id=scan.id, frame=result.frame)},
    }


def scan_json(scan: Scan) -> dict[str, Any]:
    """Return a scan with all its analysed frames."""
    return {"id": scan.id, "job_id": scan.job_id, "path": scan.path, "sha256": scan.sha256,
            "status": scan.status.value, "error": scan.error, "label": scan.label,
            "frames": scan.frames, "duplicate_of": scan.duplicate_of_id, "attempts": scan.attempts,
            "results": [result_json(scan, r) for r in scan.results]}


def neurons_json(stats: NeuronStats, top: int) -> dict[str, Any]:
    """Return the job's neuron statistics: the top correlated neurons and the stored summary."""
    pairs = top_neurons(correlations_from_bytes(stats.correlations), top)
    return {"label_source": stats.label_source, "n_scans": stats.n_scans,
            "n_neurons": stats.n_neurons,
            "top_positive": [{"neuron": n, "correlation": c} for n, c in pairs if c > 0],
            "top_negative": [{"neuron": n, "correlation": c} for n, c in pairs if c < 0][::-1],
            "summary": stats.summary}


def listing_json(listing: Listing) -> dict[str, Any]:
    """Return one folder of a scan root."""
    return {"root": listing.root, "root_path": str(listing.root_path), "path": listing.path,
            "parent": listing.parent, "scans": listing.scans,
            "folders": [{"name": e.name, "path": e.path, "scans": e.scans} for e in listing.folders]}
