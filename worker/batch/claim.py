"""Stage 1: claim a batch's pending scans in one short transaction, counting the attempt."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from worker.batch.items import CLOSED, MAX_ATTEMPTS, Item, Work
from worker.db import SessionFactory, write_scope
from worker.models import OVERLAYS_ON_DEMAND, Job, Result, Scan, ScanStatus
from worker.store import earlier_results, get_job


STORED = ("thumbnail", "heatmap")  # the outputs every job writes; overlays may be on demand


def load(session_factory: SessionFactory, job_id: int, scan_ids: list[int],
         output_dir: Path) -> Work | None:
    """Claim the batch's pending scans (counting the attempt); None when the job is closed."""
    with write_scope(session_factory) as session:
        job = get_job(session, job_id)
        if job.status in CLOSED:
            return None
        query = (select(Scan).where(Scan.id.in_(scan_ids), Scan.job_id == job_id,
                                    Scan.status == ScanStatus.PENDING).order_by(Scan.id))
        scans = list(session.scalars(query))
        session.execute(update(Scan).where(Scan.id.in_([s.id for s in scans]))
                        .values(attempts=Scan.attempts + 1))
        shared = _other_jobs_share_model(session, job)
        reuse = earlier_results(session, job, [s.sha256 for s in scans if s.sha256]) if shared else {}
        items = [_item(scan, reuse.get(scan.sha256), output_dir) for scan in scans]
        return Work(job.id, Path(job.root), job.method, job.label_source,
                    tuple(job.model.spec["positive_classes"]), output_dir, items,
                    eager_overlays=job.overlays != OVERLAYS_ON_DEMAND)  # None: from before


def _other_jobs_share_model(session, job: Job) -> bool:
    """Tell whether another job ran the same model and method: only then can results be reused.

    Asked per batch, since such a job may finish while this one runs; the first job of a model
    skips ``earlier_results``, ~40 % of a claim (1.4 of 3.5 ms a batch of 16).
    """
    query = select(Job.id).where(Job.model_id == job.model_id, Job.method == job.method, Job.id != job.id)
    return session.scalar(query.limit(1)) is not None


def _item(scan: Scan, reuse: tuple[int | None, list[Result]] | None, output_dir: Path) -> Item:
    """Return a scan's batch item; it reuses an earlier job's results if their thumbnails and maps
    are still there (an overlay that job left on demand is rendered from them if needed)."""
    item = Item(scan.id, scan.path, scan.label)
    if scan.attempts >= MAX_ATTEMPTS:
        item.error = (f"the analysis of this scan was started {scan.attempts} times and never "
                      "finished (the worker was stopped or ran out of time each time)")
    elif reuse and all((output_dir / getattr(r, kind)).is_file() for r in reuse[1] for kind in STORED):
        item.multi_frame, item.reuse = reuse[0] is not None, reuse[1]
    return item
