"""Hand jobs to the Celery workers: only ids travel, and tasks are sent by name.

The web process imports this module, so nothing here may import TensorFlow or ``worker.tasks``.
Call these functions after the job's rows are committed: a worker may pick the task up at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from worker.celery_app import ENUMERATE_TASK, PROCESS_TASK
from worker.settings import get_settings


class QueueError(RuntimeError):
    """The broker cannot take the work; the message tells a person what to do."""


def _app(app: Celery | None) -> Celery:
    if app is not None:
        return app
    from worker.celery_app import celery_app

    return celery_app


def _broker_label(app: Celery) -> str:
    return maybe_sanitize_url(app.conf.broker_url)


@contextlib.contextmanager
def _producer(app: Celery) -> Iterator:
    if not app.conf.broker_url:
        raise QueueError("no broker is configured: set TUMORLENS_BROKER_URL to a Redis URL, start "
                         "the whole system with `tumorlens up`, or run the scan with --local")
    try:
        with app.producer_or_acquire() as producer:
            yield producer
    except OperationalError as exc:
        raise QueueError(f"cannot reach the broker at {_broker_label(app)} ({exc}); start Redis "
                         "(or `tumorlens up`), or run the scan with --local") from exc


def enqueue_job(job_id: int, app: Celery | None = None) -> None:
    """Queue the walk of a recorded job's folder; the walk queues the batches it finds."""
    app = _app(app)
    with _producer(app) as producer:
        app.send_task(ENUMERATE_TASK, args=[job_id], producer=producer)  # routed to its own queue


def batches(scan_ids: Sequence[int], size: int) -> Iterator[list[int]]:
    """Cut ``scan_ids`` into consecutive lists of at most ``size`` ids."""
    for start in range(0, len(scan_ids), size):
        yield list(scan_ids[start:start + size])


def enqueue_batches(job_id: int, scan_ids: Iterable[int], batch_size: int | None = None,
                    app: Celery | None = None) -> int:
    """Queue ``scan_ids`` as analysis tasks of ``batch_size`` scans; return how many were queued."""
    app = _app(app)
    size = batch_size or get_settings().batch_size
    sent = 0
    with _producer(app) as producer:
        for batch in batches(list(scan_ids), size):
            app.send_task(PROCESS_TASK, args=[job_id, batch], producer=producer)
            sent += 1
    return sent
