"""Report and listing queries: one row per analysed image, filtered, sorted and paginated.

A row is a scan joined with one of its results (a multi-frame DICOM gives one row per frame; a
failed or duplicate scan gives one row with no result). Rows are ordered by a key that is never
NULL, then by scan id and frame, so that the previous/next row of any row can be found by a keyset
comparison with the same filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, literal, select, tuple_
from sqlalchemy.orm import Session, joinedload

from web.filters import ScanFilter
from worker.export import OOD_LIMIT
from worker.models import Job, Result, Scan, ScanStatus

ROW_COLUMNS = (Scan.id.label("scan_id"), Scan.path, Scan.frames, Scan.status, Scan.error,
               Scan.duplicate_of_id,
               Result.id.label("result_id"), Result.predicted_class, Result.tumor_probability,
               Result.thumbnail, Result.ood_score)


@dataclass(frozen=True)
class OodCounts:
    """How many of a job's scans were measured against the model's experience, and lay outside it."""

    measured: int
    outside: int


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _frame():
    return func.coalesce(Result.frame, 0)


def _sort_key(flt: ScanFilter):
    """Return the non-NULL primary sort expression; rows without a probability sort last."""
    if flt.sort == "path":
        return Scan.path
    if flt.sort == "status":
        return Scan.status
    missing = -1.0 if flt.descending else 2.0
    return func.coalesce(Result.tumor_probability, literal(missing))


def _order_key(flt: ScanFilter):
    return tuple_(_sort_key(flt), Scan.id, _frame())


def _filtered(stmt: Select, job_id: int, flt: ScanFilter) -> Select:
    """Apply the job and the filter's conditions to a statement over scans outer-joined to results."""
    stmt = stmt.select_from(Scan).outerjoin(Result, Result.scan_id == Scan.id).where(Scan.job_id == job_id)
    if flt.min_p is not None:
        stmt = stmt.where(Result.tumor_probability >= flt.min_p)
    if flt.max_p is not None:
        stmt = stmt.where(Result.tumor_probability <= flt.max_p)
    if flt.predicted:
        stmt = stmt.where(Result.predicted_class == flt.predicted)
    if flt.status:
        stmt = stmt.where(Scan.status == ScanStatus(flt.status))
    if flt.ood is not None:  # NULL (not measured) matches neither
        stmt = stmt.where(Result.ood_score > OOD_LIMIT if flt.ood else Result.ood_score <= OOD_LIMIT)
    if flt.text:
        stmt = stmt.where(Scan.path.ilike(f"%{_escape_like(flt.text)}%", escape="\\"))
    return stmt


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _ordered(stmt: Select, flt: ScanFilter, descending: bool) -> Select:
    columns = (_sort_key(flt), Scan.id, _frame())
    return stmt.order_by(*(c.desc() if descending else c.asc() for c in columns))


def scan_rows(session: Session, job_id: int, flt: ScanFilter, page: int, per_page: int) -> Page:
    """Return one page of the job's rows matching ``flt``, with the total count."""
    total = session.scalar(_filtered(select(func.count()), job_id, flt)) or 0
    page = min(max(page, 1), max(1, -(-total // per_page)))
    stmt = _ordered(_filtered(select(*ROW_COLUMNS, _frame().label("frame")), job_id, flt), flt,
                    flt.descending)
    rows = session.execute(stmt.limit(per_page).offset((page - 1) * per_page)).all()
    return Page(rows, total, page, per_page)


def neighbours(session: Session, job_id: int, flt: ScanFilter, scan_id: int,
               frame: int) -> tuple[Any, Any]:
    """Return the (previous, next) rows around one row in the filtered, sorted list (None at the ends)."""
    base = _filtered(select(Scan.id.label("scan_id"), _frame().label("frame")), job_id, flt)
    key = session.execute(_filtered(select(_sort_key(flt)), job_id, flt)
                          .where(Scan.id == scan_id, _frame() == frame)).scalar()
    if key is None:
        return None, None
    here = tuple_(literal(key), literal(scan_id), literal(frame))
    after = _order_key(flt) < here if flt.descending else _order_key(flt) > here
    before = _order_key(flt) > here if flt.descending else _order_key(flt) < here
    nxt = session.execute(_ordered(base.where(after), flt, flt.descending).limit(1)).first()
    prev = session.execute(_ordered(base.where(before), flt, not flt.descending).limit(1)).first()
    return prev, nxt


def status_counts(session: Session, job_ids: list[int]) -> dict[int, dict[str, int]]:
    """Return {job id: {status: count}} over the jobs' scans."""
    counts: dict[int, dict[str, int]] = {j: {} for j in job_ids}
    stmt = (select(Scan.job_id, Scan.status, func.count()).where(Scan.job_id.in_(job_ids))
            .group_by(Scan.job_id, Scan.status))
    for job_id, status, n in session.execute(stmt):
        counts[job_id][ScanStatus(status).value] = n
    return counts


def flagged_counts(session: Session, jobs: list[Job]) -> dict[int, int]:
    """Return {job id: number of scans with a frame predicted as a positive class}."""
    counts = {job.id: 0 for job in jobs}
    for job in jobs:
        positive = job.model.spec.get("positive_classes") or []
        # EXISTS per scan reads each scan's results through their unique index: faster than
        # COUNT(DISTINCT) over the job's results, which needs a temporary B-tree.
        flagged = (select(Result.id).where(Result.scan_id == Scan.id,
                                           Result.predicted_class.in_(positive)).exists())
        if positive:
            counts[job.id] = session.scalar(select(func.count()).select_from(Scan)
                                            .where(Scan.job_id == job.id, flagged)) or 0
    return counts


def ood_counts(session: Session, job_id: int) -> OodCounts:
    """Count the job's scans with a measured frame, and those with a frame outside the model's
    experience (a scan of several frames counts once)."""
    measured = func.count(func.distinct(case((Result.ood_score.is_not(None), Result.scan_id))))
    outside = func.count(func.distinct(case((Result.ood_score > OOD_LIMIT, Result.scan_id))))
    row = session.execute(select(measured, outside).where(Result.job_id == job_id)).one()
    return OodCounts(row[0] or 0, row[1] or 0)


def job_page(session: Session, page: int, per_page: int) -> Page:
    """Return one page of jobs, newest first, with their models loaded."""
    total = session.scalar(select(func.count(Job.id))) or 0
    page = min(max(page, 1), max(1, -(-total // per_page)))
    stmt = (select(Job).options(joinedload(Job.model)).order_by(Job.id.desc())
            .limit(per_page).offset((page - 1) * per_page))
    return Page(list(session.scalars(stmt)), total, page, per_page)


def result_for(session: Session, scan_id: int, frame: int) -> Result | None:
    """Return the result of one frame of a scan."""
    return session.scalar(select(Result).where(Result.scan_id == scan_id, Result.frame == frame))


def failures(session: Session, job_id: int, limit: int) -> tuple[list[Any], int]:
    """Return up to ``limit`` failed scans of the job (path order) and how many failed in all."""
    where = (Scan.job_id == job_id, Scan.status == ScanStatus.FAILED)
    total = session.scalar(select(func.count()).select_from(Scan).where(*where)) or 0
    rows = session.execute(select(Scan.id, Scan.path, Scan.error).where(*where)
                           .order_by(Scan.path).limit(limit)).all()
    return rows, total
