"""Start, cancel and resume jobs from the web: record, commit, then hand ids to the queue.

The web never analyses anything itself; without a broker it refuses to start a job and says how
to run one instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.model.spec import SpecError, load_spec
from worker.models import Model

# pipeline.explain.analysis.METHODS in the order the form offers them, Grad-CAM (the default) first;
# tests/web checks that every method has a label here.
METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "layercam": "LayerCAM",
    "scorecam": "Score-CAM (slower: extra forward passes)",
    "cam": "CAM (needs global pooling before the classifier)",
}
METHODS = tuple(METHOD_LABELS)
DEFAULT_KEY = "default"
NO_BROKER = ("No task queue is configured (TUMORLENS_BROKER_URL is not set), so jobs cannot be "
             "started from the web. Start everything with `tumorlens up`, or analyse a folder on "
             "the command line with `tumorlens scan FOLDER --local`.")


class StartError(ValueError):
    """A job that cannot be started; the message is meant for a person."""


@dataclass(frozen=True)
class ModelChoice:
    key: str
    label: str
    spec_path: Path


def model_choices(session: Session, default_model: Path) -> list[ModelChoice]:
    """Return the default model followed by the models the store knows."""
    choices = [ModelChoice(DEFAULT_KEY, f"Default model ({_name(default_model)})", default_model)]
    for model in session.scalars(select(Model).order_by(Model.name, Model.id)):
        choices.append(ModelChoice(str(model.id), f"{model.name} ({model.digest[:8]})",
                                   Path(model.spec_path)))
    return choices


def _name(spec_path: Path) -> str:
    """Return the model's name from its spec, or the path when the spec cannot be read."""
    try:
        return load_spec(spec_path).name
    except (SpecError, OSError):
        return str(spec_path)


def _spec_for(session: Session, key: str, default_model: Path):
    choice = next((c for c in model_choices(session, default_model) if c.key == key), None)
    if choice is None:
        raise StartError("Choose one of the listed models.")
    try:
        return load_spec(choice.spec_path)
    except (SpecError, OSError) as exc:
        raise StartError(f"The model {choice.label} cannot be used: {exc}") from exc


def check_start(session: Session, model_key: str, method: str, broker_url: str | None,
                default_model: Path):
    """Return the spec of the chosen model once the whole choice is known to be usable.

    Raises:
        StartError: no broker, an unknown method or an unusable model.
    """
    if not broker_url:
        raise StartError(NO_BROKER)
    if method not in METHODS:
        raise StartError(f"Choose one of the CAM methods: {', '.join(METHODS)}.")
    return _spec_for(session, model_key, default_model)


def launch(session: Session, root: Path, spec, method: str, user_id: int | None,
           broker_url: str) -> int:
    """Record a job over ``root``, commit it, queue it, and return its id.

    Raises:
        StartError: the queue refused the job (it stays recorded, to be resumed).
    """
    from worker.jobs import JobError, create_job

    try:
        job = create_job(session, root, spec, method, created_by=user_id)
    except JobError as exc:
        raise StartError(f"The job cannot be created: {exc}.") from exc
    session.commit()  # the worker must find the job when it picks up the id
    _queue("enqueue_job", job.id, broker_url)
    return job.id


def resume(session: Session, job_id: int, broker_url: str | None, session_factory) -> None:
    """Reopen a cancelled or failed job, commit, and queue its unfinished scans again."""
    from worker.jobs import reopen_job

    if not broker_url:
        raise StartError(NO_BROKER)
    reopen_job(session, job_id)
    session.commit()
    _queue("resume_job", job_id, broker_url, session_factory=session_factory)


def cancel(session: Session, job_id: int) -> None:
    """Mark a job cancelled; workers start no new batch of it."""
    from worker.jobs import JobError, cancel_job

    try:
        cancel_job(session, job_id)
    except JobError as exc:
        raise StartError(f"Nothing to cancel: {exc}.") from exc
    session.commit()


@functools.lru_cache(maxsize=4)
def _celery(broker_url: str):
    """Return a Celery app that sends to ``broker_url`` (the web's configured broker)."""
    from worker.celery_app import create_celery_app
    from worker.settings import get_settings

    return create_celery_app(get_settings().model_copy(update={"broker_url": broker_url}))


def _queue(name: str, job_id: int, broker_url: str, **options) -> None:
    import worker.queue

    try:
        getattr(worker.queue, name)(job_id, app=_celery(broker_url), **options)
    except Exception as exc:  # a broker outage must read as words, not a 500
        raise StartError(f"Job {job_id} is recorded but the task queue could not take it: {exc}. "
                         "Resume it once the queue is back.") from exc
