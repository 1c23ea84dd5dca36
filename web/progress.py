"""A job's state as pages and the API show it: counts, fraction done, rate and time left."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from worker.models import Job, JobStatus

FINISHED = frozenset({JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED})


@dataclass(frozen=True)
class Progress:
    total: int
    pending: int
    done: int
    failed: int
    duplicate: int
    skipped: int  # slices of DICOM series not to be analysed: handled, never analysed
    flagged: int
    fraction: float  # 0..1 of scans handled
    rate: float | None  # scans handled per second since the job started
    eta_seconds: float | None
    seconds: float | None  # elapsed (running) or duration (finished)

    def as_dict(self) -> dict:
        return asdict(self)


def aware(moment: dt.datetime | None) -> dt.datetime | None:
    """Return ``moment`` as an aware UTC datetime (SQLite hands back naive ones)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.timezone.utc)


def is_finished(job: Job) -> bool:
    """Tell whether the job will not change any more on its own."""
    return JobStatus(job.status) in FINISHED


def progress(job: Job, counts: dict[str, int], flagged: int, now: dt.datetime | None = None) -> Progress:
    """Compute the job's progress from its per-status scan counts."""
    now = now or dt.datetime.now(dt.timezone.utc)
    done, failed, dup, skipped = (counts.get(k, 0) for k in ("done", "failed", "duplicate", "skipped"))
    pending = counts.get("pending", 0)
    handled = done + failed + dup + skipped
    total = handled + pending
    fraction = 1.0 if JobStatus(job.status) is JobStatus.DONE else (handled / total if total else 0.0)
    seconds = _elapsed(job, now)
    rate = handled / seconds if seconds and handled else None
    eta = pending / rate if rate and not is_finished(job) else None
    return Progress(total, pending, done, failed, dup, skipped, flagged, fraction, rate, eta, seconds)


def _elapsed(job: Job, now: dt.datetime) -> float | None:
    start = aware(job.started_at)
    if start is None:
        return None
    end = aware(job.finished_at) or now
    return max((end - start).total_seconds(), 0.0)
