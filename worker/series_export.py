"""Export a job's DICOM series (``tumorlens export JOB --format series`` or ``series-csv``).

One object per series, studies in the order the walk met them, series by SeriesNumber within:

```json
{"study_key": "…", "series_key": "…", "number": 3, "modality": "MR", "body_part": "HEAD",
 "description": "AX SE", "image_type": ["ORIGINAL", "PRIMARY"], "orientation": "axial",
 "slice_count": 7, "spacing_mm": 5.0, "spacing_from": "positions", "sequence": "T1",
 "sequence_because": "RepetitionTime 500 ms, EchoTime 12 ms → T1", "analysed": true,
 "reason": null, "analysed_slices": 7, "ood_slices": 0, "aggregation": "top-k-mean", "k": 3,
 "threshold": 0.5, "tumor_probability": 0.91, "tumor": true,
 "strongest_slice": {"index": 3, "path": "DICOM/0001/IM0012", "frame": null},
 "tumor_slices": [[2, 4]], "longest_run": [2, 4]}
```

``study_key`` and ``series_key`` are keyed hashes of the UIDs (``worker.settings.dicom_uid_key``);
a per-scan record's ``series`` is the same ``series_key``, and slice indexes are the per-scan
``slice_index``. A series not analysed (``analysed`` false) says why in ``reason`` and has no
probability, call or tumor slices: skipped by its tags (its scans are ``skipped``), too few
slices, most slices outside the model's experience, or no slice that could be read.
``tumor_probability`` is the mean of the ``k`` highest slice probabilities, slices outside the
model's experience counted as 0; ``tumor`` is it at or above ``threshold``; ``tumor_slices`` are
the runs of slices at or above the threshold, as [first, last] slice indexes. The CSV has the
same fields flat: ``image_type`` joined by "\\", ``strongest_slice_index``, ``_path`` and
``_frame``, ranges as "2-4;9-9".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.export import csv_cell, write_flat_csv, write_json
from worker.models import Series
from worker.store import get_job

SERIES_FORMATS = ("series", "series-csv")
DESCRIPTION = ("number", "modality", "body_part", "description", "image_type", "orientation",
               "slice_count", "spacing_mm", "spacing_from", "sequence", "sequence_because", "analysed",
               "reason")
RESULT = ("aggregation", "k", "threshold", "tumor_probability", "tumor", "strongest_slice",
          "tumor_slices", "longest_run")
FIELDS = ("study_key", "series_key", *DESCRIPTION, "analysed_slices", "ood_slices", *RESULT)
CSV_COLUMNS = tuple(column for field in FIELDS for column in (
    ("strongest_slice_index", "strongest_slice_path", "strongest_slice_frame")
    if field == "strongest_slice" else (field,)))


def series_rows(session: Session, job_id: int) -> Iterator[dict]:
    """Yield one record per series of the job, studies in walk order, series by number."""
    get_job(session, job_id)  # a clear NotFound before any output
    found = list(session.scalars(select(Series).where(Series.job_id == job_id).order_by(Series.id)))
    study_first: dict[str, int] = {}
    for series in found:
        study_first.setdefault(series.study_key, series.id)
    found.sort(key=lambda s: (study_first[s.study_key], s.number is None, s.number or 0, s.id))
    for series in found:
        yield series_record(series)


def series_record(series: Series) -> dict:
    """Return one series as its export record."""
    result = series.result or {}
    record = {"study_key": series.study_key, "series_key": series.key,
              **{field: getattr(series, field) for field in DESCRIPTION},
              "analysed_slices": result.get("analysed_slices"), "ood_slices": result.get("ood_slices"),
              **{field: result.get(field) for field in RESULT}}
    record["tumor_probability"] = series.tumor_probability
    if not series.analysed:  # nothing of a skipped series is called tumor, whatever its slices say
        record.update(dict.fromkeys(RESULT))
    return record


def flatten_series(record: dict) -> dict:
    """Return a series record with lists and the strongest slice spread flat, for CSV."""
    flat = {k: csv_cell(v) for k, v in record.items() if k not in ("strongest_slice", "image_type",
                                                                   "tumor_slices", "longest_run")}
    flat["image_type"] = csv_cell("\\".join(record["image_type"] or ())) or None
    strongest = record["strongest_slice"] or {}
    for part in ("index", "path", "frame"):
        flat[f"strongest_slice_{part}"] = csv_cell(strongest.get(part))
    flat["tumor_slices"] = ";".join(f"{a}-{b}" for a, b in record["tumor_slices"] or ())
    flat["longest_run"] = "-".join(map(str, record["longest_run"])) if record["longest_run"] else None
    return flat


def export_series(session: Session, job_id: int, fmt: str, out: TextIO) -> int:
    """Write the job's series to ``out`` as ``series`` (JSON) or ``series-csv``; return how many."""
    if fmt not in SERIES_FORMATS:
        raise ValueError(f"unknown series export format {fmt!r}: choose {' or '.join(SERIES_FORMATS)}")
    rows = series_rows(session, job_id)
    if fmt == "series":
        return write_json(rows, out)
    return write_flat_csv(rows, out, CSV_COLUMNS, flatten_series)
