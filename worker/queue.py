"""Hand jobs to the Celery workers: only ids travel, and tasks are sent by name.

The web process imports this module, so nothing here may import TensorFlow or ``worker.tasks``.
Call these functions after the job's rows are committed: a worker may pick the task up at once.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from worker.celery_app import ENUMERATE_TASK, PROCESS_TASK
from worker.settings import get_settings


class QueueError(RuntimeError):
    """The broker cannot take the work; the message tells a person what to do."""


def _app(app: Celery | None) -> Celery:
    """Return ``app``, or the process's Celery app for the broker the settings name now."""
    if app is not None:
        return app
    from worker.celery_app import celery_app

    broker_url = get_settings().broker_url
    if celery_app.conf.broker_url == broker_url:
        return celery_app
    return _client_app(broker_url)


@functools.lru_cache(maxsize=4)
def _client_app(broker_url: str | None) -> Celery:
    # The module-level app read the settings when it was first imported; a process whose settings
    # changed since (a test, an embedding program) must not send to the old broker.
    from worker.celery_app import create_celery_app

    return create_celery_app(get_settings())


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


def _publish(app: Celery, producer, task: str, args: list, kwargs: dict | None = None) -> None:
    # Progress is read from the store: no result is awaited, so none is subscribed to, and a walk
    # sending thousands of batches does not keep a handle on each (Celery's parent "trail").
    app.send_task(task, args=args, kwargs=kwargs, producer=producer, ignore_result=True,
                  add_to_parent=False)


def _send(app: Celery | None, task: str, args: list, kwargs: dict | None = None) -> None:
    app = _app(app)
    with _producer(app) as producer:
        _publish(app, producer, task, args, kwargs)


def enqueue_job(job_id: int, app: Celery | None = None, continued: bool = False) -> None:
    """Queue the walk of a recorded job's folder; the walk queues the batches it finds.

    ``continued`` marks a walk that carries on where a previous task of it stopped.
    """
    _send(app, ENUMERATE_TASK, [job_id], {"continued": True} if continued else None)


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
            _publish(app, producer, PROCESS_TASK, [job_id, batch])
            sent += 1
    return sent


def requeue_pending(session_factory, job_id: int, app: Celery | None = None) -> int:
    """Queue every still-pending scan of a job again; return how many batches were queued."""
    from worker.db import session_scope
    from worker.store import pending_scan_ids

    sent = 0
    with session_scope(session_factory) as session:
        for chunk in pending_scan_ids(session, job_id):
            sent += enqueue_batches(job_id, chunk, app=app)
    return sent


def resume_job(job_id: int, session_factory=None, app: Celery | None = None) -> int:
    """Queue again whatever of a job is unfinished; return how many tasks were queued.

    A walk that never finished is queued again (it records only what is new, and queues what it
    recorded before); otherwise every pending scan is. Batches still in the queue may so run
    twice: the second run finds their scans done and does nothing.
    """
    from worker.db import make_session_factory, session_scope
    from worker.models import JobStatus
    from worker.store import get_job

    factory = session_factory or make_session_factory()
    with session_scope(factory) as session:
        status = get_job(session, job_id).status
    if status in (JobStatus.PENDING, JobStatus.ENUMERATING):
        enqueue_job(job_id, app)
        return 1
    if status is not JobStatus.RUNNING:
        return 0
    queued = requeue_pending(factory, job_id, app)
    if queued == 0:  # only the final bookkeeping was lost: an empty batch does it
        _send(app, PROCESS_TASK, [job_id, []])
        queued = 1
    return queued
