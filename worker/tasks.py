"""Celery tasks: thin wrappers that take ids, call the job functions, and retry what is transient.

``tumorlens.enumerate(job_id)`` walks a job's folder and queues its scans in batches;
``tumorlens.process(job_id, scan_ids)`` analyses one batch and tries to finish the job. Both are
safe to run twice: the job functions only ever touch scans that are still pending.

A worker process loads its model once, on its first batch (after the fork: TensorFlow must not
be imported in the parent), and keeps it for every later batch of the same model and method.
TensorFlow is imported with the batch time limit held back: an import the limit cut short would
leave the process unable to import it again.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections import OrderedDict

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from worker import jobs
from worker.celery_app import (ENUMERATE_HARD_LIMIT, ENUMERATE_SOFT_LIMIT, ENUMERATE_TASK,
                               PROCESS_TASK)
from worker.batch import CLOSED, BatchOutcome
from worker.cpu import single_threaded_blas
from worker.db import dispose_engines, make_session_factory, session_scope
from worker.models import Scan, ScanStatus
from worker.queue import QueueError, enqueue_batches, enqueue_job, requeue_pending
from worker.settings import get_settings
from worker.store import get_job

log = get_task_logger(__name__)  # the task log format names the job

# A store or broker that is briefly away (restart, failover, SQLite's write lock held too long).
TRANSIENT = (OperationalError, RedisConnectionError, RedisTimeoutError, QueueError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 300,
         "retry_jitter": True, "max_retries": 20}
MAX_ANALYZERS = 2  # models kept per process; each may hold hundreds of MB
UNEXPECTED_RETRIES = 3

_analyzers: OrderedDict[tuple[str, str], object] = OrderedDict()


@worker_process_init.connect
def init_pool_process(**_) -> None:
    """Prepare a freshly forked pool process for its first task."""
    dispose_engines()  # a pooled connection must never be shared with the parent
    single_threaded_blas()


def session_factory():
    """Return the session factory of the configured store."""
    return make_session_factory()


def analyzer_for(factory, job_id: int):
    """Return this process's Analyzer for the job's model and method, creating it on first use."""
    with session_scope(factory) as session:
        job = get_job(session, job_id)
        key = (job.model.digest, job.method)
        if key not in _analyzers:
            _analyzers[key] = jobs.job_analyzer(session, job_id)
            while len(_analyzers) > MAX_ANALYZERS:
                _analyzers.popitem(last=False)
    _analyzers.move_to_end(key)
    return _analyzers[key]


@shared_task(name=ENUMERATE_TASK, soft_time_limit=ENUMERATE_SOFT_LIMIT,
             time_limit=ENUMERATE_HARD_LIMIT, **RETRY)
def enumerate_scans(job_id: int, continued: bool = False) -> int:
    """Walk the job's folder, queue its scans in batches; return how many batches were queued."""
    factory = session_factory()
    # Scans recorded by an earlier walk (one that died, or a reopened job) may never have been
    # queued; a continuation of this very walk queued its own.
    queued = 0 if continued else requeue_pending(factory, job_id)
    chunk: list[int] = []
    try:
        for chunk in jobs.enumerate_job(factory, job_id):
            queued += enqueue_batches(job_id, chunk)
            chunk = []
    except SoftTimeLimitExceeded:
        log.warning("the walk ran out of time; it carries on in a new task")
        queued += enqueue_batches(job_id, chunk)  # the chunk in hand may be partly queued
        enqueue_job(job_id, continued=True)
        return queued
    jobs.finalize_job(factory, job_id)  # an empty folder, or nothing new, finishes here
    log.info("walk finished: %d batches queued", queued)
    return queued


def pending_attempts(factory, job_id: int, scan_ids: list[int]) -> list[tuple[int, int]] | None:
    """Return (scan id, attempts) of the batch's pending scans, or None if the job is closed."""
    with session_scope(factory) as session:
        if get_job(session, job_id).status in CLOSED:
            return None
        query = (select(Scan.id, Scan.attempts)
                 .where(Scan.id.in_(scan_ids), Scan.job_id == job_id,
                        Scan.status == ScanStatus.PENDING).order_by(Scan.id))
        return [tuple(row) for row in session.execute(query)]


@shared_task(bind=True, name=PROCESS_TASK, **RETRY)
def process_scans(self, job_id: int, scan_ids: list[int]) -> dict:
    """Analyse one batch of a job's scans, then finish the job if it was the last one."""
    factory = session_factory()
    pending = pending_attempts(factory, job_id, scan_ids) if scan_ids else []
    if pending is None:
        return {"skipped": "job closed"}
    ids = [scan_id for scan_id, _ in pending]
    if len(ids) > 1 and any(attempts for _, attempts in pending):
        # Delivered before and never finished: a scan in it may kill the process. One scan per
        # task puts the blame on that scan alone; it fails after MAX_ATTEMPTS deliveries.
        return {"split": enqueue_batches(job_id, ids, batch_size=1)}
    outcome = run_batch(self, factory, job_id, ids) if ids else None
    if outcome is None and ids:
        return {"skipped": "job failed"}
    return {**vars(outcome or BatchOutcome()), "finished": jobs.finalize_job(factory, job_id)}


def run_batch(task, factory, job_id: int, scan_ids: list[int]):
    """Run ``process_batch`` with this process's analyzer; None if the job's model is unusable."""
    try:
        analyzer = analyzer_for(factory, job_id)
    except (ValueError, OSError) as exc:  # SpecError, JobError, a model file gone
        jobs.fail_job(factory, job_id, f"the job's model cannot be used: {exc}")
        return None
    try:
        import_tensorflow()  # before the batch is claimed: a limit hit here costs no attempt
        fresh = not analyzer.prepared
        if not jobs.prepare_analysis(factory, job_id, analyzer):  # once per process: then cached
            return None
        if fresh:
            single_threaded_blas()  # again: preparing loaded Keras, and SciPy's BLAS with it
        return jobs.process_batch(factory, analyzer, job_id, scan_ids, get_settings().output_dir)
    except SoftTimeLimitExceeded as exc:
        # Back in the queue like a crashed batch: split, then the slow scan fails on its own.
        raise Reject(exc, requeue=True) from exc
    except TRANSIENT:
        raise
    except Exception as exc:
        # A fault outside any one scan's guard. Each retry counts an attempt on the scans, so
        # a fault that follows a scan ends with that scan failed, not with a loop.
        log.exception("batch of scans %s failed", scan_ids)
        raise task.retry(exc=exc, countdown=5, max_retries=UNEXPECTED_RETRIES) from exc


def import_tensorflow() -> None:
    """Import Keras and TensorFlow whole, then raise the soft time limit if it came meanwhile.

    The limit is a signal that raises wherever the process is. An import it cuts short leaves
    TensorFlow half-registered, and every later import in the process fails ("Name
    tf.RaggedTensorSpec has already been registered"), so every scan it is given would fail.
    """
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return  # imported whole by an earlier batch: nothing to hold the limit back for
    with soft_limit_held_back():
        import keras  # noqa: F401  (imports TensorFlow, its backend)
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def soft_limit_held_back():
    """Run the block whole in a pool process, raising a soft time limit that came only after it."""
    from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler

    if SIG_SOFT_TIMEOUT is None or signal.getsignal(SIG_SOFT_TIMEOUT) != soft_timeout_sighandler:
        yield  # not a prefork pool process: no soft limit comes here
        return
    came: list[int] = []
    signal.signal(SIG_SOFT_TIMEOUT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(SIG_SOFT_TIMEOUT, soft_timeout_sighandler)
    if came:
        raise SoftTimeLimitExceeded()
