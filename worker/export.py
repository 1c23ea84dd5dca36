"""Export a job's records as JSON or CSV, streamed row by row from the store.

One object per analysed image (a multi-frame scan gives one per frame; ``frame`` is null for a
single image), one per failed or skipped scan. A duplicate carries the results of the scan it
duplicates. A DICOM slice names its ``series`` (the keyed hash ``export --format series`` lists it
by) and its ``slice_index``, its place from 0 in the series' anatomical order (null until the
job is done, and for scans of no series); a skipped scan's ``error`` says why its series was not
analysed.
Paths of scans are relative to the job's root; overlay and heatmap paths are absolute, under the
output folder. Nothing identifying a patient is stored, so nothing of the kind can be exported.

``ood_score`` is the scan's distance from the model's training distribution over the model's limit
(``OOD_LIMIT``): above it the scan is outside the model's experience and ``out_of_distribution`` is
true. Both are null when the model ships no in-distribution statistics (not measured). The flag is
decided on the stored score, before it is rounded for the record.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.model.spec import DEFAULT_THRESHOLD
from worker.models import Job, NeuronStats, Result, Scan, Series
from worker.render import overlay_target
from worker.store import NotFound, get_job

FIELDS = ("path", "frame", "sha256", "status", "error", "width", "height", "predicted_class",
          "tumor_probability", "probabilities", "method", "peak", "overlay", "heatmap", "threshold",
          "ood_score", "out_of_distribution", "series", "slice_index")
FORMATS = ("json", "csv")
STREAM_ROWS = 500
OOD_LIMIT = 1.0  # an ood_score above this: the scan lies outside the model's experience
OOD_DIGITS = 3


def model_threshold(spec: dict) -> float:
    """Return the operating point a model's stored spec decides at: tumor when P(tumor) >= it."""
    return spec.get("threshold") or DEFAULT_THRESHOLD


def is_out_of_distribution(ood_score: float | None) -> bool | None:
    """Tell whether a scan lies outside the model's experience; None when it was not measured."""
    return None if ood_score is None else ood_score > OOD_LIMIT


def export_rows(session: Session, job_id: int, output_dir: str | Path,
                overlay_dir: str | Path | None = None,
                undrawn: frozenset[str] = frozenset()) -> Iterator[dict]:
    """Yield the job's records in scan order, ``STREAM_ROWS`` at a time from the database.

    ``overlay`` is where the overlay is, or will be when rendered, under the output folder; with
    ``overlay_dir`` (``export --overlays``), where it was drawn there, or null when it is one of
    ``undrawn`` (the overlays whose source scan was gone or changed).
    """
    job = get_job(session, job_id)  # a clear NotFound before any output
    # The operating point predicted_class was decided at: tumor when tumor_probability >= it.
    threshold = model_threshold(job.model.spec)
    output_dir = Path(output_dir)
    analysed = func.coalesce(Scan.duplicate_of_id, Scan.id)
    query = (select(Scan.path, Scan.frames, Scan.sha256, Scan.status, Scan.error, Result, Series.key,
                    Scan.slice_index, Scan.frame_slices)
             .outerjoin(Result, Result.scan_id == analysed).outerjoin(Series, Series.id == Scan.series_id)
             .where(Scan.job_id == job_id)
             .order_by(Scan.id, Result.frame).execution_options(yield_per=STREAM_ROWS))
    for path, frames, sha256, status, error, result, series, index, frame_slices in session.execute(query):
        record = {"path": path, "frame": None, "sha256": sha256, "status": status.value,
                  "error": error, **dict.fromkeys(FIELDS[5:]), "series": series, "slice_index": index}
        if result is not None and error is None:
            record.update(_result_fields(result, output_dir), threshold=threshold)
            if overlay_dir is not None:
                drawn = overlay_target(Path(overlay_dir), job_id, result.overlay)
                record["overlay"] = None if str(drawn) in undrawn else str(drawn)
            record["frame"] = None if frames is None else result.frame
            if frame_slices and result.frame < len(frame_slices):  # a multi-frame file's frames
                record["slice_index"] = frame_slices[result.frame]
        yield record  # the session's identity map is weak: rows already yielded are let go


def _result_fields(result: Result, output_dir: Path) -> dict:
    return {"width": result.width, "height": result.height,
            "predicted_class": result.predicted_class,
            "tumor_probability": result.tumor_probability, "probabilities": result.probabilities,
            "method": result.method, "peak": [result.peak_x, result.peak_y],
            "overlay": str(output_dir / result.overlay), "heatmap": str(output_dir / result.heatmap),
            "ood_score": None if result.ood_score is None else round(result.ood_score, OOD_DIGITS),
            "out_of_distribution": is_out_of_distribution(result.ood_score)}


def write_json(rows: Iterator[dict], out: TextIO) -> int:
    """Write ``rows`` as one JSON array, an object per line; return how many."""
    count = 0
    out.write("[")
    for row in rows:
        out.write(("," if count else "") + "\n" + json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def csv_columns(class_names: list[str]) -> list[str]:
    """Return the CSV header: the JSON fields flattened (``prob_<class>``, ``peak_x``, ``peak_y``)."""
    columns = []
    for field in FIELDS:
        if field == "probabilities":
            columns += [f"prob_{name}" for name in class_names]
        elif field == "peak":
            columns += ["peak_x", "peak_y"]
        else:
            columns.append(field)
    return columns


# A spreadsheet reads a cell starting with one of these as a formula: a scan named
# "=HYPERLINK(...).jpg" would run in the reviewer's Excel (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """Return a text cell a spreadsheet shows as text (a leading apostrophe), other values as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_cell(value):
    """Return a value as a CSV cell: true/false as JSON writes them, text made spreadsheet-safe."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return spreadsheet_safe(value)


def flatten(row: dict, class_names: list[str]) -> dict:
    """Return a record with probabilities and peak spread over their own columns, for CSV.

    Text that a spreadsheet would run as a formula gets a leading apostrophe (``spreadsheet_safe``);
    the JSON export keeps every value as it is.
    """
    flat = {k: csv_cell(v) for k, v in row.items() if k not in ("probabilities", "peak")}
    probabilities = row["probabilities"] or {}
    flat.update({f"prob_{name}": probabilities.get(name) for name in class_names})
    flat["peak_x"], flat["peak_y"] = row["peak"] or (None, None)
    return flat


def write_csv(rows: Iterator[dict], out: TextIO, class_names: list[str]) -> int:
    """Write ``rows`` as CSV with a header; return how many."""
    return write_flat_csv(rows, out, csv_columns(class_names), lambda row: flatten(row, class_names))


def write_flat_csv(rows: Iterator[dict], out: TextIO, columns: Sequence[str],
                   flat: Callable[[dict], dict]) -> int:
    """Write ``rows``, each made flat by ``flat``, as CSV under the header ``columns``; return how many."""
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(flat(row))
        count += 1
    return count


def export_job(session: Session, job_id: int, output_dir: str | Path, fmt: str, out: TextIO,
               overlay_dir: str | Path | None = None, undrawn: frozenset[str] = frozenset()) -> int:
    """Write job ``job_id`` to ``out`` as ``json`` or ``csv``; return the number of records."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose json or csv")
    rows = export_rows(session, job_id, output_dir, overlay_dir, undrawn)
    if fmt == "json":
        return write_json(rows, out)
    return write_csv(rows, out, list(get_job(session, job_id).model.spec["class_names"]))


def neuron_report(session: Session, job: Job, top: int = 10) -> dict:
    """Return the job's strongest neurons of each sign with their class means, JSON-ready."""
    stats = job.neuron_stats
    if stats is None:
        raise NotFound(f"job {job.id} has no neuron statistics yet (it is {job.status.value})")
    summary = stats.summary
    return {"job": job.id, "label_source": stats.label_source, "n_scans": stats.n_scans,
            "n_neurons": stats.n_neurons, "model": job.model.name,
            "top_positive": [_neuron(row) for row in summary.get("top_positive", [])[:top]],
            "top_negative": [_neuron(row) for row in summary.get("top_negative", [])[:top]],
            "note": _neuron_note(stats)}


def _neuron(row: dict) -> dict:
    return {"neuron": row["neuron"], "correlation": row["correlation"],
            "mean_activation": {"tumor": row["mean_tumor"], "no_tumor": row["mean_no_tumor"]}}


def _neuron_note(stats: NeuronStats) -> str | None:
    reused = stats.summary.get("reused_scans", 0)
    notes = []
    if stats.summary.get("correlation_defined") is False and stats.n_scans:
        notes.append("all scans have the same label, so no correlation exists")
    if reused:
        notes.append(f"{reused} scans reused results of earlier jobs and are not included")
    return "; ".join(notes) or None
