"""DICOM series as the report and the scan page show them: studies → series → slices.

The report's series section is one page of a job's series (studies in walk order, series by
number within) and, in one more query, the first ``STRIP_CAP`` slices of each in anatomical order.
A slice's place is its file's ``slice_index``, or for a frame of a multi-frame file that frame's
entry of ``frame_slices``. A duplicate slice takes its original's place and is not shown twice.
Series and studies are known only by keyed hashes, shown shortened (``short_key``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from worker.export import is_out_of_distribution
from worker.models import Result, Scan, Series

STRIP_CAP = 200  # slices shown per series; the rest are counted
SERIES_PER_PAGE = 20
KEY_SHOWN = 8  # hex characters of a keyed hash shown on a page


class frame_slice(FunctionElement):
    """The anatomical index of one frame of a multi-frame file: ``frame_slices[frame]``, or NULL."""

    type = Integer()
    inherit_cache = True


@compiles(frame_slice, "sqlite")
def _frame_slice_sqlite(element, compiler, **kw):
    slices, frame = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(json_extract({slices}, '$[' || ({frame}) || ']') AS INTEGER)"


@compiles(frame_slice)
def _frame_slice_default(element, compiler, **kw):  # PostgreSQL: a json column
    slices, frame = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(({slices} ->> ({frame})) AS INTEGER)"


def short_key(key: str | None) -> str:
    """Return a keyed hash shortened for display."""
    return (key or "")[:KEY_SHOWN]


def _frame():
    return func.coalesce(Result.frame, 0)


def _slice_key():
    """Return a row's place in its series (NULL until the job has finished)."""
    return func.coalesce(frame_slice(Scan.frame_slices, _frame()), Scan.slice_index)


def _members(stmt):
    """Restrict a statement over scans outer-joined to results to the slices shown in a series."""
    return (stmt.select_from(Scan).outerjoin(Result, Result.scan_id == Scan.id)
            .where(Scan.duplicate_of_id.is_(None)))


@dataclass(frozen=True)
class Tile:
    """One slice of a strip: its scan page, thumbnail (None without a result) and call."""

    scan_id: int
    frame: int
    index: int | None
    status: str
    result_id: int | None
    tumor_probability: float | None
    called: bool
    outside: bool
    strongest: bool


@dataclass
class SeriesRow:
    series: Series
    tumor: bool | None  # the series' call; None when it was not analysed
    tiles: list[Tile] = field(default_factory=list)
    total: int = 0  # slices in the strip before the cap

    @property
    def more(self) -> int:
        return max(self.total - len(self.tiles), 0)

    @property
    def analysed_tiles(self) -> bool:
        return any(t.result_id is not None for t in self.tiles)

    @property
    def runs(self) -> list[list[int]]:
        return (self.series.result or {}).get("tumor_slices") or [] if self.series.analysed else []


@dataclass
class Study:
    key: str
    rows: list[SeriesRow]


@dataclass
class SeriesSection:
    studies: list[Study]
    total: int
    page: int
    per_page: int
    threshold: float

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def series_section(session: Session, job_id: int, threshold: float, page: int = 1,
                   per_page: int = SERIES_PER_PAGE, cap: int = STRIP_CAP) -> SeriesSection | None:
    """Return one page of the job's series with their strips, or None if the job has no series."""
    total = session.scalar(select(func.count(Series.id)).where(Series.job_id == job_id)) or 0
    if not total:
        return None
    page = min(max(page, 1), -(-total // per_page))
    study_first = func.min(Series.id).over(partition_by=Series.study_key)
    ranked = select(Series.id, study_first.label("first")).where(Series.job_id == job_id).subquery()
    stmt = (select(Series).join(ranked, ranked.c.id == Series.id)
            .order_by(ranked.c.first, Series.number.is_(None), Series.number, Series.id)
            .limit(per_page).offset((page - 1) * per_page))
    rows = [SeriesRow(s, _call(s, threshold)) for s in session.scalars(stmt)]
    _fill_strips(session, {row.series.id: row for row in rows}, threshold, cap)
    studies: list[Study] = []
    for row in rows:
        if not studies or studies[-1].key != row.series.study_key:
            studies.append(Study(row.series.study_key, []))
        studies[-1].rows.append(row)
    return SeriesSection(studies, total, page, per_page, threshold)


def _call(series: Series, threshold: float) -> bool | None:
    if not series.analysed or series.tumor_probability is None:
        return None
    return series.tumor_probability >= threshold


def _fill_strips(session: Session, rows: dict[int, SeriesRow], threshold: float, cap: int) -> None:
    """Put the first ``cap`` slices of each series, in anatomical order, into its row (one query)."""
    if not rows:
        return
    order = (_slice_key(), Scan.id, _frame())
    inner = _members(select(
        Scan.series_id, Scan.id.label("scan_id"), _frame().label("frame"),
        _slice_key().label("index"), Scan.status, Result.id.label("result_id"),
        Result.tumor_probability, Result.ood_score,
        func.row_number().over(partition_by=Scan.series_id, order_by=order).label("n"),
        func.count().over(partition_by=Scan.series_id).label("total"))
    ).where(Scan.series_id.in_(list(rows))).subquery()
    stmt = select(inner).where(inner.c.n <= cap).order_by(inner.c.series_id, inner.c.n)
    for item in session.execute(stmt):
        row = rows[item.series_id]
        row.total = item.total
        row.tiles.append(_tile(row, item, threshold))


def _tile(row: SeriesRow, item: Any, threshold: float) -> Tile:
    outside = bool(is_out_of_distribution(item.ood_score))
    p = item.tumor_probability
    # as the series result counts them: a slice outside the model's experience is no evidence,
    # and nothing of a series that was not analysed is called
    called = row.series.analysed and p is not None and not outside and p >= threshold
    strongest = ((row.series.result or {}).get("strongest_slice") or {}).get("index")
    return Tile(item.scan_id, item.frame, item.index, item.status.value, item.result_id, p,
                called, outside, row.series.analysed and strongest is not None and strongest == item.index)


@dataclass(frozen=True)
class Place:
    """Where a scan (one frame of it) lies in its series, and its anatomical neighbours."""

    series: Series
    index: int | None  # from 0; None until the job has finished
    count: int
    prev: Any
    next: Any


def place_in_series(session: Session, scan: Scan, frame: int) -> Place | None:
    """Return the slice's place in its series with the previous and next slices, or None."""
    if scan.series_id is None:
        return None
    series = session.get(Series, scan.series_id)
    if series is None:
        return None
    index = scan.slice_index
    if scan.frame_slices and 0 <= frame < len(scan.frame_slices):
        index = scan.frame_slices[frame]
    count = series.slice_count or session.scalar(
        _members(select(func.count())).where(Scan.series_id == series.id)) or 0
    if index is None:
        return Place(series, None, count, None, None)
    base = _members(select(Scan.id.label("scan_id"), _frame().label("frame"))).where(
        Scan.series_id == series.id, _slice_key().is_not(None))
    order = (_slice_key(), Scan.id, _frame())
    prev = session.execute(base.where(_slice_key() < index)
                           .order_by(*(c.desc() for c in order)).limit(1)).first()
    nxt = session.execute(base.where(_slice_key() > index).order_by(*order).limit(1)).first()
    return Place(series, index, count, prev, nxt)
