"""DICOM series on the worker floor: headers read during the walk, series recorded, and slice order
and series results worked out when the job finishes.

While walking (``worker.jobs``): a file that may be DICOM (a .dcm or .dicom suffix, none, or a
digit suffix as in UID names) has its header read in the hash thread that just read the file
(``read_slices``: ``pipeline.io.series.read_archive`` on that one file, ``stop_before_pixels``).
A file whose header cannot be read belongs to no series: it is analysed like any scan, and the
scan reader says what is wrong with it; the walk never fails for it. ``attach_series`` records a
chunk's new series, described by the first of its files recorded (later files do not change it),
links the scans to them and, when a series' tags rule it out (``select_series`` on tags alone:
the slice count is not known before the walk ends), records its scans ``skipped`` with the reason
in ``error``: they are never analysed. A job with ``all_series`` analyses every series.

When the job finishes (``finish_series``, in ``finalize_job``'s transaction): each series' slices
are put in anatomical order (``pipeline.io.series.order_slices``, the order ``read_archive`` gives:
position along the normal, else InstanceNumber, else path) from the positions recorded per file;
the slice count and spacing follow; then the rules that need the whole series: too few slices,
and a look at the images: a series most of whose analysed slices lie outside the model's
experience (``ood_score`` > 1) is "not a brain series by its images". A series that passes gets
its result: slices outside the model's experience count as no tumor evidence (P = 0), then the
mean of the 3 highest slice probabilities decides at the model's threshold (``benchmarks/
bench_series.py``: 44/44 tumor series found, 38/44 clean series cleared, LGG VALIDATION+TEST);
the runs of slices at or above it are the called slice ranges. A byte-identical copy of a slice
(status ``duplicate``) takes its original's place in the order and counts once.

Positions are measured along each file's own slice normal: the series' normal wherever its
files share one orientation, which is what an orderable series is (a 3-plane localizer is not).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, update

from pipeline.io.scans import may_hold_dicom
from worker.export import is_out_of_distribution, model_threshold
from worker.models import Job, Result, Scan, ScanStatus, Series
from worker.store import insert_ignoring_conflicts

if TYPE_CHECKING:
    from pipeline.io import series as found_series

log = logging.getLogger(__name__)

FOUND = "_series"  # a row's series as read from its header, while its chunk is recorded; no column
NOT_BRAIN_BY_IMAGES = "skipped: not a brain series by its images"


def read_slices(root: Path, path: str, key: bytes) -> found_series.Series | None:
    """Return the series one file belongs to, with that file's slices; None if it holds none."""
    if not may_hold_dicom(PurePosixPath(path).name):
        return None
    from pipeline.io.series import read_archive

    try:
        found = read_archive(root, key, [path]).series
    except Exception:  # never the walk's failure: the scan reader explains a bad file in words
        log.warning("cannot read the DICOM header of %s", path, exc_info=True)
        return None
    return found[0] if found else None


def slice_columns(found: found_series.Series) -> dict:
    """Return the Scan columns that place one file's slices in its series."""
    slices = found.slices
    if len(slices) == 1 and slices[0].frame is None:
        return {"position_mm": slices[0].position_mm, "instance": slices[0].instance}
    by_frame = sorted(slices, key=lambda s: s.frame)
    return {"instance": slices[0].instance, "frame_positions": [s.position_mm for s in by_frame]}


def rules():
    """Return the selection rules (``pipeline.io.series.Rules``: MR, brain, at least 5 slices)."""
    from pipeline.io.series import Rules

    return Rules()


def attach_series(session, job: Job, rows: list[dict]) -> None:
    """Record the chunk's new series, link its DICOM rows to theirs, skip the rows of skipped ones.

    Rows carry what ``read_slices`` found under ``FOUND``; it is taken out of them here.
    """
    first: dict[str, found_series.Series] = {}
    orientations: dict[str, set[str]] = {}
    keys = []
    for row in rows:
        found = row.pop(FOUND, None)
        keys.append(None if found is None else found.key)
        if found is not None:
            first.setdefault(found.key, found)
            orientations.setdefault(found.key, set()).add(found.info.orientation)
            row.update(slice_columns(found))
    if not first:
        return
    insert_ignoring_conflicts(session, Series, [_series_row(job, found) for found in first.values()])
    query = select(Series.key, Series.id, Series.analysed, Series.reason, Series.orientation).where(
        Series.job_id == job.id, Series.key.in_(list(first)))
    stored = {}
    for key, series_id, analysed, reason, orientation in session.execute(query):
        stored[key] = series_id, analysed, reason
        merged = merge_orientations({orientation, *orientations[key]})
        if merged != orientation:  # a 3-plane localizer's files, say: one series of several planes
            session.execute(update(Series).where(Series.id == series_id).values(orientation=merged))
    for row, key in zip(rows, keys):
        if key is None:
            continue
        series_id, analysed, reason = stored[key]
        row["series_id"] = series_id
        if not analysed and "status" not in row:
            row.update(status=ScanStatus.SKIPPED, error=reason)


def merge_orientations(names: set[str | None]) -> str:
    """Return one series' orientation from its files': theirs if they agree, else "mixed"."""
    known = names - {None, "unknown"}
    return "unknown" if not known else known.pop() if len(known) == 1 else "mixed"


def _series_row(job: Job, found: found_series.Series) -> dict:
    from pipeline.io.series import select_series

    info = found.info
    by_tags = select_series(found, replace(rules(), min_slices=0), all_series=bool(job.all_series))
    return {"job_id": job.id, "key": found.key, "study_key": found.study_key, "number": info.number,
            "modality": info.modality, "body_part": info.body_part, "description": info.description,
            "image_type": list(info.image_type), "orientation": info.orientation,
            "spacing_mm": info.spacing_mm, "spacing_from": info.spacing_from,
            "sequence": info.sequence.name, "sequence_because": info.sequence.because,
            "analysed": by_tags.analyse, "reason": by_tags.reason}


def finish_series(session, job: Job) -> None:
    """Order each series' slices, apply the whole-series rules and record its result."""
    threshold = model_threshold(job.model.spec)
    for series in session.scalars(select(Series).where(Series.job_id == job.id).order_by(Series.id)).all():
        ordered = _order(session, series)
        _conclude(series, job, ordered, _slice_results(session, series), threshold)


def _order(session, series: Series) -> tuple:
    """Set every scan's slice_index (and frame_slices) in the series; return the ordered slices."""
    from pipeline.io.series import Slice, order_slices

    query = select(Scan.id, Scan.path, Scan.duplicate_of_id, Scan.position_mm, Scan.instance,
                   Scan.frame_positions).where(Scan.series_id == series.id)
    rows = session.execute(query).all()
    originals = [row for row in rows if row.duplicate_of_id is None]
    ordered = order_slices(
        Slice(row.path, None, row.position_mm, row.instance) if row.frame_positions is None else
        Slice(row.path, frame, position, row.instance)
        for row in originals for frame, position in enumerate(row.frame_positions or [None]))
    index = {(s.path, s.frame): i for i, s in enumerate(ordered)}
    placed = {}
    for row in originals:
        if row.frame_positions is None:
            placed[row.id] = (index[(row.path, None)], None)
        else:
            frames = [index[(row.path, frame)] for frame in range(len(row.frame_positions))]
            placed[row.id] = (min(frames), frames)
    values = [dict(zip(("b_id", "b_index", "b_frames"),
                       (row.id, *placed.get(row.id, placed.get(row.duplicate_of_id, (None, None))))))
              for row in rows]
    if values:
        scans = Scan.__table__
        session.execute(update(scans).where(scans.c.id == bindparam("b_id"))
                        .values(slice_index=bindparam("b_index"), frame_slices=bindparam("b_frames")), values)
    return ordered


def _slice_results(session, series: Series) -> list[tuple[int, float, float | None]]:
    """Return (slice index, tumor probability, ood_score) of the series' analysed slices, in order."""
    query = (select(Scan.slice_index, Scan.frame_slices, Result.frame, Result.tumor_probability,
                    Result.ood_score).join(Result, Result.scan_id == Scan.id)
             .where(Scan.series_id == series.id, Scan.duplicate_of_id.is_(None),
                    Scan.status == ScanStatus.DONE))
    found = [(frames[frame] if frames else index, probability, ood)
             for index, frames, frame, probability, ood in session.execute(query)]
    return sorted(found, key=lambda item: item[0])


def _conclude(series: Series, job: Job, ordered: tuple, slices: list, threshold: float) -> None:
    from pipeline.evaluate.series import DEFAULT_AGGREGATION, DEFAULT_K, summarise_series
    from pipeline.io.series import slice_spacing

    series.slice_count = len(ordered)
    spacing = slice_spacing(s.position_mm for s in ordered)
    if spacing is not None:
        series.spacing_mm, series.spacing_from = spacing, "positions"
    outside = sum(bool(is_out_of_distribution(ood)) for _, _, ood in slices)
    counts = {"analysed_slices": len(slices), "ood_slices": outside}
    series.result, series.tumor_probability = counts, None
    if not series.analysed:  # skipped by its tags during the walk: nothing was analysed
        return
    reason = _whole_series_reason(series, job, ordered, len(slices), outside)
    if reason is None and not slices:
        reason = "no slice of this series could be analysed (the per-scan export says why)"
    if reason is not None:
        series.analysed, series.reason = False, reason
        return
    values = [0.0 if is_out_of_distribution(ood) else probability for _, probability, ood in slices]
    summary = summarise_series(values, threshold, DEFAULT_AGGREGATION, DEFAULT_K)
    at = [index for index, _, _ in slices]  # slice index of each analysed slice
    strongest = at[summary.strongest_slice]
    series.tumor_probability = summary.probability
    series.result = {**counts, "aggregation": summary.aggregation, "k": summary.k,
                     "threshold": summary.threshold, "tumor": summary.tumor,
                     "strongest_slice": {"index": strongest, "path": ordered[strongest].path,
                                         "frame": ordered[strongest].frame},
                     "tumor_slices": [[at[a], at[b]] for a, b in summary.runs],
                     "longest_run": [at[a] for a in summary.longest_run] if summary.longest_run else None}


def _whole_series_reason(series: Series, job: Job, ordered: tuple, analysed: int, outside: int) -> str | None:
    """Return why the rules that need the whole series skip it, or None."""
    from pipeline.io.series import Series as Found
    from pipeline.io.series import select_series

    def by_images(_) -> str | None:
        if analysed and outside * 2 > analysed:
            return f"{NOT_BRAIN_BY_IMAGES} ({outside} of {analysed} slices outside the model's experience)"
        return None

    selection = select_series(Found(series.study_key, series.key, ordered, _info(series, len(ordered))),
                              rules(), all_series=bool(job.all_series), image_check=by_images)
    if selection.analyse:
        return None
    if analysed and not selection.reason.startswith(NOT_BRAIN_BY_IMAGES):  # analysed before it was known
        return (f"{selection.reason}; its {analysed} analysed slices are in the per-scan export, "
                "but the series gets no result")
    return selection.reason


def _info(series: Series, count: int):
    from pipeline.io.dicom_header import SequenceGuess
    from pipeline.io.series import SeriesInfo

    return SeriesInfo(series.number, series.modality, series.body_part, series.description,
                      tuple(series.image_type or ()), series.orientation or "unknown", count,
                      series.spacing_mm, series.spacing_from,
                      SequenceGuess(series.sequence or "unknown", series.sequence_because or ""))
