"""The Celery application: Redis broker, late acknowledgement, one batch at a time per process.

Run a worker with ``tumorlens worker`` (or ``celery --app worker.celery_app worker``). Importing
this module is cheap and never imports TensorFlow or the tasks' dependencies: the tasks module is
loaded by the worker only (``include``), and producers queue tasks by name.
"""

from __future__ import annotations

import logging

from celery import Celery, current_task
from celery.signals import after_setup_task_logger

from worker.settings import Settings, get_settings

DEFAULT_QUEUE = "tumorlens"
ENUMERATE_QUEUE = "tumorlens.enumerate"  # a huge folder's walk never holds back analysis
QUEUES = (DEFAULT_QUEUE, ENUMERATE_QUEUE)
ENUMERATE_TASK = "tumorlens.enumerate"
PROCESS_TASK = "tumorlens.process"

# A batch's soft limit is the setting TUMORLENS_BATCH_TIME_LIMIT; the hard one kills it this later.
HARD_LIMIT_GRACE = 60
# A walk that runs out of time re-queues itself and carries on where the store says it stopped.
ENUMERATE_SOFT_LIMIT = 60 * 60
ENUMERATE_HARD_LIMIT = ENUMERATE_SOFT_LIMIT + 5 * 60
# Redis hands an unacknowledged message to another worker after this long; it must exceed the
# longest task or a live task would run twice. Dead children are requeued at once regardless.
VISIBILITY_MARGIN = 15 * 60
# A TensorFlow process holding a model sits near 1 GiB; far beyond that is a leak: recycle it.
MAX_MEMORY_PER_CHILD_KIB = 3 * 1024 * 1024

TASK_LOG_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] job %(job)s "
                   "%(task_name)s[%(task_id)s]: %(message)s")


def celery_config(settings: Settings) -> dict:
    """Return the Celery configuration for these settings."""
    batch_hard_limit = settings.batch_time_limit + HARD_LIMIT_GRACE
    visibility_timeout = max(batch_hard_limit, ENUMERATE_HARD_LIMIT) + VISIBILITY_MARGIN
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.broker_url,
        "task_ignore_result": True,  # progress lives in the store; results would only fill Redis
        "broker_transport_options": {"visibility_timeout": visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A batch killed by the hard limit goes back to the queue; repeated deliveries are
        # counted per scan in the store, so a scan that always hangs ends up failed, not looping.
        "task_acks_on_timeout": False,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.batch_time_limit,
        "task_time_limit": batch_hard_limit,
        "worker_max_memory_per_child": MAX_MEMORY_PER_CHILD_KIB,
        # Work is idempotent and recorded in the store: a task that outlives a broker outage
        # should finish its batch rather than be cancelled and done again.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {ENUMERATE_TASK: {"queue": ENUMERATE_QUEUE}},
        "worker_send_task_events": True,  # lets Flower show tasks without a remote command
        "task_send_sent_event": True,
        "worker_task_log_format": TASK_LOG_FORMAT,
        "worker_hijack_root_logger": True,
    }


def create_celery_app(settings: Settings | None = None) -> Celery:
    """Build the Celery application configured from ``settings`` (the process settings by default)."""
    app = Celery("tumorlens", include=["worker.tasks"], set_as_current=settings is None)
    app.conf.update(celery_config(settings or get_settings()))
    return app


class JobIdFilter(logging.Filter):
    """Give each task log record the id of the job it works for (every task's first argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = getattr(current_task.request, "args", None) if current_task else None
        record.job = args[0] if args else "-"
        return True


@after_setup_task_logger.connect
def _tag_task_logs_with_job(logger: logging.Logger, **_) -> None:
    for handler in logger.handlers:
        handler.addFilter(JobIdFilter())


celery_app = app = create_celery_app()
