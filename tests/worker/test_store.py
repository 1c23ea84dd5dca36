"""Data functions of the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from worker import store
from worker.db import session_scope
from worker.models import Job, JobStatus, Model, NeuronPartial, Result, Scan, ScanStatus, User


def make_job(session, digest: str = "a" * 64, method: str = "gradcam") -> Job:
    model = session.scalar(select(Model).where(Model.digest == digest))
    model = model or Model(digest=digest, name="m", spec_path="/m/model.json",
                           spec={"positive_classes": ["tumor"]})
    job = Job(root="/data", model=model, method=method)
    session.add(job)
    session.flush()
    return job


def rows(*specs: tuple[str, str | None]) -> list[dict]:
    return [{"path": path, "sha256": sha, "label": None} for path, sha in specs]


def test_add_scans_is_idempotent(session_factory):
    with session_scope(session_factory) as session:
        job = make_job(session)
        first = store.add_scans(session, job.id, rows(("a.png", "1"), ("b.png", "2")))
        again = store.add_scans(session, job.id, rows(("b.png", "2"), ("c.png", "3")))
        assert len(first) == 2 and again[0] == first[1] and again[1] > first[1]
        assert session.scalar(select(func.count()).select_from(Scan)) == 3
        assert store.existing_paths(session, job.id, ["a.png", "z.png"]) == {"a.png"}


def test_rows_naming_different_columns_keep_every_value(session_factory):
    """A failed scan's error survives beside rows that have none, in either order."""
    with session_scope(session_factory) as session:
        job = make_job(session)
        good, bad = rows(("a.png", "1"), ("c.png", "3")), rows(("b.png", None))
        bad[0].update(status=ScanStatus.FAILED, error="this file is empty")
        store.add_scans(session, job.id, [good[0], *bad, good[1]])
        recorded = {scan.path: scan for scan in session.scalars(select(Scan).where(Scan.job_id == job.id))}
        assert (recorded["b.png"].status, recorded["b.png"].error) == (ScanStatus.FAILED, "this file is empty")
        assert all(recorded[p].status == ScanStatus.PENDING and recorded[p].error is None
                   for p in ("a.png", "c.png"))


def test_duplicates_point_at_the_lowest_id_and_copies_of_failures_fail(session_factory):
    with session_scope(session_factory) as session:
        job = make_job(session)
        ids = store.add_scans(session, job.id, rows(("a.png", "h"), ("b.png", "h"), ("c.png", "k")))
        assert store.mark_duplicates(session, job.id, ids) == [ids[1]]
        session.get(Scan, ids[2]).status = ScanStatus.FAILED
        session.get(Scan, ids[2]).error = "truncated PNG"
        later = store.add_scans(session, job.id, rows(("d.png", "h"), ("e.png", "k")))
        store.mark_duplicates(session, job.id, later)
        session.expire_all()
        by_path = {s.path: s for s in session.scalars(select(Scan))}
        assert by_path["b.png"].duplicate_of_id == by_path["d.png"].duplicate_of_id == ids[0]
        assert by_path["d.png"].status == ScanStatus.DUPLICATE
        assert by_path["e.png"].status == ScanStatus.FAILED
        assert by_path["e.png"].error == "same content as c.png, which failed: truncated PNG"


def test_pending_scan_ids_come_in_ascending_chunks(session_factory):
    with session_scope(session_factory) as session:
        job = make_job(session)
        ids = store.add_scans(session, job.id, rows(*[(f"{i:02}.png", str(i)) for i in range(7)]))
        session.get(Scan, ids[3]).status = ScanStatus.DONE
        session.flush()
        chunks = list(store.pending_scan_ids(session, job.id, chunk_size=3))
        assert chunks == [ids[:3], ids[4:7]]
        assert store.has_pending(session, job.id)


def test_job_summary_counts_and_times(session_factory):
    with session_scope(session_factory) as session:
        job = make_job(session)
        ids = store.add_scans(session, job.id, rows(("a", "1"), ("b", "2"), ("c", "2"), ("d", "3")))
        store.mark_duplicates(session, job.id, ids)
        session.get(Scan, ids[0]).status = ScanStatus.DONE
        session.get(Scan, ids[3]).status = ScanStatus.FAILED
        start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        job.started_at, job.finished_at = start, start + dt.timedelta(seconds=12.5)
        job.status = JobStatus.DONE
        job_id = job.id
    with session_scope(session_factory) as session:
        assert store.job_summary(session, job_id) == {
            "job": job_id, "status": "done", "scans": 4, "done": 1, "failed": 1, "duplicate": 1,
            "skipped": 0, "series": 0, "seconds": 12.5}


def test_get_job_names_a_missing_job(session_factory):
    with session_scope(session_factory) as session, pytest.raises(store.NotFound, match="no job 42"):
        store.get_job(session, 42)


def test_partials_are_replaced_not_added(session_factory):
    with session_scope(session_factory) as session:
        job = make_job(session)
        store.upsert_partial(session, job.id, "k", b"one")
        store.upsert_partial(session, job.id, "k", b"two")
        store.upsert_partial(session, job.id, "other", b"three")
        payloads = session.scalars(select(NeuronPartial.payload).order_by(NeuronPartial.id))
        assert list(payloads) == [b"two", b"three"]


def _result(scan: Scan, frame: int = 0) -> Result:
    return Result(scan_id=scan.id, job_id=scan.job_id, frame=frame, width=4, height=3,
                  predicted_class="tumor", tumor_probability=0.9,
                  probabilities={"no_tumor": 0.1, "tumor": 0.9}, method="gradcam", peak_x=1,
                  peak_y=2, overlay="o.png", thumbnail="t.png", heatmap="h.npz")


def test_earlier_results_need_the_same_model_and_method(session_factory):
    with session_scope(session_factory) as session:
        old = make_job(session)
        (scan_id,) = store.add_scans(session, old.id, rows(("a.png", "h")))
        scan = session.get(Scan, scan_id)
        scan.status = ScanStatus.DONE
        session.add(_result(scan))
        same, other_method = make_job(session), make_job(session, method="layercam")
        other_model = make_job(session, digest="b" * 64)
        found = store.earlier_results(session, same, ["h", "unknown"])
        assert list(found) == ["h"] and found["h"][0] is None
        assert [r.scan_id for r in found["h"][1]] == [scan_id]
        assert store.earlier_results(session, other_method, ["h"]) == {}
        assert store.earlier_results(session, other_model, ["h"]) == {}
        assert store.earlier_results(session, old, ["h"]) == {}


def test_create_user_hashes_and_refuses_a_taken_name(session_factory):
    with session_scope(session_factory) as session:
        user = store.create_user(session, " ana ", "s3cret")
        assert user.username == "ana" and user.password_hash != "s3cret"
        assert check_password_hash(user.password_hash, "s3cret")
        with pytest.raises(ValueError, match="already exists"):
            store.create_user(session, "ana", "other")
        with pytest.raises(ValueError, match="non-empty"):
            store.create_user(session, "bob", "")
        assert session.scalar(select(func.count()).select_from(User)) == 1
