"""Data functions over the store. Each takes the caller's ``session`` and never commits it.

Imports nothing heavy: the web process uses these to read jobs and to create users.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from worker.models import Job, Model, NeuronPartial, Result, Scan, ScanStatus, Series, User, utcnow

if TYPE_CHECKING:
    from pipeline.model.spec import ModelSpec


class NotFound(LookupError):
    """A job (or other record) named by the user does not exist."""


def get_job(session: Session, job_id: int) -> Job:
    """Return job ``job_id`` or raise NotFound with a readable message."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"there is no job {job_id} in this store")
    return job


def model_for_spec(session: Session, spec: ModelSpec) -> Model:
    """Return the Model row for ``spec`` (by digest), recording it on first use."""
    digest = spec.digest()
    query = select(Model).where(Model.digest == digest)
    model = session.scalar(query)
    if model is None:  # two jobs may start with a new model at once: the key decides
        insert_ignoring_conflicts(session, Model, [{
            "digest": digest, "name": spec.name, "spec_path": str(spec.folder / "model.json"),
            "spec": spec.to_json(), "card": _model_card(spec), "created_at": utcnow()}])
        model = session.scalar(query)
    return model


def _model_card(spec: ModelSpec) -> dict | None:
    import json

    path = spec.folder / "model_card.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None  # a card is documentation; an unreadable one must not block a job


def _insert(session: Session, table):
    """Return the dialect's INSERT for a mapped class's table.

    A Core statement on the table, not the ORM's bulk INSERT: the rows are plain dicts, and the
    ORM's per-row bookkeeping was most of a batch's commit time (``benchmarks/bench_scan.py``).
    """
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table.__table__)


def insert_ignoring_conflicts(session: Session, table, rows: list[dict]) -> None:
    """Insert ``rows``, skipping those that collide with a unique key (idempotent retries).

    Rows may name different columns (a failed scan has an error, a good one none): one executemany
    per set of columns, since a Core INSERT takes its columns from the first row alone.
    """
    shapes: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for same in shapes.values():
        session.execute(_insert(session, table).on_conflict_do_nothing(), same)


def upsert_partial(session: Session, job_id: int, batch_key: str, payload: bytes) -> None:
    """Store a batch's neuron statistics, replacing an earlier delivery of the same batch."""
    statement = _insert(session, NeuronPartial).values(job_id=job_id, batch_key=batch_key,
                                                       payload=payload)
    session.execute(statement.on_conflict_do_update(index_elements=["job_id", "batch_key"],
                                                    set_={"payload": payload}))


def existing_paths(session: Session, job_id: int, paths: Iterable[str]) -> set[str]:
    """Return which of ``paths`` the job already recorded."""
    paths = list(paths)
    if not paths:
        return set()
    query = select(Scan.path).where(Scan.job_id == job_id, Scan.path.in_(paths))
    return set(session.scalars(query))


def add_scans(session: Session, job_id: int, rows: list[dict]) -> list[int]:
    """Record scans (dicts of Scan columns) unless already there; return their ids in order."""
    now = utcnow()
    insert_ignoring_conflicts(session, Scan, [
        {"job_id": job_id, "status": ScanStatus.PENDING, "attempts": 0, "updated_at": now, **row}
        for row in rows])
    query = (select(Scan.id).where(Scan.job_id == job_id, Scan.path.in_([r["path"] for r in rows]))
             .order_by(Scan.id))
    return list(session.scalars(query)) if rows else []


def mark_duplicates(session: Session, job_id: int, scan_ids: list[int]) -> list[int]:
    """Mark scans whose content a lower-id scan of the job already has; return their ids.

    A copy of a scan that already failed fails too, saying so.
    """
    original = aliased(Scan)
    chunk = select(original.sha256).where(original.id.in_(scan_ids))  # only these contents:
    first = (select(Scan.sha256, func.min(Scan.id).label("first_id"))  # a walk stays linear
             .where(Scan.job_id == job_id, Scan.sha256.in_(chunk)).group_by(Scan.sha256)
             .subquery())
    query = (select(Scan.id, original).join(first, first.c.sha256 == Scan.sha256)
             .join(original, original.id == first.c.first_id)
             .where(Scan.id.in_(scan_ids), Scan.id != first.c.first_id,
                    Scan.status == ScanStatus.PENDING))
    pairs = session.execute(query).all()
    for scan_id, source in pairs:
        values = {"status": ScanStatus.DUPLICATE, "duplicate_of_id": source.id, "updated_at": utcnow()}
        if source.status == ScanStatus.FAILED:
            values.update(status=ScanStatus.FAILED, error=copy_failure_message(source.path, source.error))
        session.execute(update(Scan).where(Scan.id == scan_id).values(**values))
    return [scan_id for scan_id, _ in pairs]


def copy_failure_message(original_path: str, error: str | None) -> str:
    """Explain why a byte-identical copy of a failed scan failed too."""
    return f"same content as {original_path}, which failed: {error}"


def pending_scan_ids(session: Session, job_id: int, chunk_size: int = 500,
                     after: int = 0) -> Iterator[list[int]]:
    """Yield the job's pending scan ids above ``after`` in ascending chunks (keyset pages)."""
    last = after
    while True:
        query = (select(Scan.id).where(Scan.job_id == job_id, Scan.status == ScanStatus.PENDING,
                                       Scan.id > last).order_by(Scan.id).limit(chunk_size))
        ids = list(session.scalars(query))
        if not ids:
            return
        yield ids
        last = ids[-1]


def has_pending(session: Session, job_id: int) -> bool:
    """Tell whether any scan of the job is still pending."""
    query = select(Scan.id).where(Scan.job_id == job_id, Scan.status == ScanStatus.PENDING)
    return session.scalar(query.limit(1)) is not None


def scan_counts(session: Session, job_id: int) -> dict[str, int]:
    """Return the number of the job's scans in each status."""
    query = select(Scan.status, func.count()).where(Scan.job_id == job_id).group_by(Scan.status)
    counts = {status.value: 0 for status in ScanStatus}
    counts.update({status.value: n for status, n in session.execute(query)})
    return counts


def job_summary(session: Session, job_id: int) -> dict:
    """Return ``{"job", "status", "scans", "done", "failed", "duplicate", "skipped", "series",
    "seconds"}``: ``skipped`` scans belong to DICOM series not to be analysed, ``series`` counts
    the DICOM series found."""
    job = get_job(session, job_id)
    counts = scan_counts(session, job_id)
    series = session.scalar(select(func.count(Series.id)).where(Series.job_id == job_id))
    return {"job": job.id, "status": job.status.value, "scans": sum(counts.values()),
            "done": counts["done"], "failed": counts["failed"], "duplicate": counts["duplicate"],
            "skipped": counts["skipped"], "series": series or 0, "seconds": round(_elapsed(job), 2)}


def _elapsed(job: Job) -> float:
    if job.started_at is None:
        return 0.0
    end = job.finished_at or utcnow()
    return max((_aware(end) - _aware(job.started_at)).total_seconds(), 0.0)


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def earlier_results(session: Session, job: Job,
                    sha256s: Iterable[str]) -> dict[str, tuple[int | None, list[Result]]]:
    """Return, per content hash, (frames, results) of the earliest done scan with the same model
    and method in another job: what a re-run may reuse instead of recomputing."""
    sha256s = list(set(sha256s))
    if not sha256s:
        return {}
    source = (select(Scan.sha256, func.min(Scan.id).label("scan_id")).join(Job)
              .where(Job.model_id == job.model_id, Job.method == job.method, Job.id != job.id,
                     Scan.status == ScanStatus.DONE, Scan.sha256.in_(sha256s))
              .group_by(Scan.sha256).subquery())
    scan = aliased(Scan)
    query = (select(scan.sha256, scan.frames, Result).join(scan, scan.id == Result.scan_id)
             .join(source, source.c.scan_id == scan.id).order_by(Result.scan_id, Result.frame))
    found: dict[str, tuple[int | None, list[Result]]] = {}
    for sha256, frames, result in session.execute(query):
        found.setdefault(sha256, (frames, []))[1].append(result)
    return found


def create_user(session: Session, username: str, password: str) -> User:
    """Record a user with a salted password hash; raise ValueError if the name is taken."""
    from werkzeug.security import generate_password_hash

    username = username.strip()
    if not username or not password:
        raise ValueError("a user needs a non-empty name and password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValueError(f"a user named {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password))
    session.add(user)
    session.flush()
    return user
