"""worker.queue against a real (private) Redis: what goes on the queues, and what happens without one."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from tests.builders.processes import ProcessGroup, RedisServer, free_port
from worker.celery_app import DEFAULT_QUEUE, ENUMERATE_QUEUE, create_celery_app
from worker.models import Job, JobStatus, Model, Scan, ScanStatus
from worker.queue import QueueError, enqueue_batches, enqueue_job, resume_job
from worker.settings import Settings


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    group = ProcessGroup(tmp_path_factory.mktemp("logs"))
    try:
        yield RedisServer(group, tmp_path_factory.mktemp("redis")).start()
    finally:
        group.close()


@pytest.fixture
def app(redis_server):
    redis_server.client().flushall()
    return create_celery_app(Settings(broker_url=redis_server.url))


def queued(redis_server, queue: str) -> list[dict]:
    """Return the messages waiting in ``queue``, oldest first, with their decoded body."""
    messages = []
    for raw in reversed(redis_server.client().lrange(queue, 0, -1)):  # LPUSHed: newest first
        message = json.loads(raw)
        assert message["content-type"] == "application/json"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append({"task": message["headers"]["task"], "args": args, "kwargs": kwargs})
    return messages


def test_a_job_is_queued_as_its_id_on_the_walk_queue(app, redis_server):
    enqueue_job(7, app=app)
    assert queued(redis_server, ENUMERATE_QUEUE) == [
        {"task": "tumorlens.enumerate", "args": [7], "kwargs": {}}]
    assert queued(redis_server, DEFAULT_QUEUE) == []


def test_scans_are_queued_in_batches_of_ids(app, redis_server):
    assert enqueue_batches(3, range(10, 20), batch_size=4, app=app) == 3
    assert [m["args"] for m in queued(redis_server, DEFAULT_QUEUE)] == [
        [3, [10, 11, 12, 13]], [3, [14, 15, 16, 17]], [3, [18, 19]]]
    assert {m["task"] for m in queued(redis_server, DEFAULT_QUEUE)} == {"tumorlens.process"}


def test_an_unreachable_broker_is_explained_without_its_password():
    app = create_celery_app(Settings(broker_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0"))
    with pytest.raises(QueueError) as caught:
        enqueue_job(1, app=app)
    message = str(caught.value)
    assert "cannot reach the broker" in message and "--local" in message
    assert "hunter2" not in message


def test_no_broker_configured_says_what_to_do():
    with pytest.raises(QueueError, match="TUMORLENS_BROKER_URL"):
        enqueue_batches(1, [1, 2], app=create_celery_app(Settings(broker_url=None)))


def add_job(session_factory, status: JobStatus, scans: dict[str, ScanStatus]) -> tuple[int, list[int]]:
    """Record a job in ``status`` with scans by path; return its id and its pending scan ids."""
    with session_factory() as session:
        model = Model(digest="0" * 64, name="m", spec_path="/nowhere/model.json", spec={})
        job = Job(root="/scans", model=model, method="gradcam", status=status)
        job.scans = [Scan(path=path, status=state) for path, state in scans.items()]
        session.add(job)
        session.commit()
        return job.id, [s.id for s in job.scans if s.status is ScanStatus.PENDING]


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.ENUMERATING])
def test_resume_walks_again_a_job_whose_walk_did_not_finish(app, redis_server, session_factory,
                                                             status):
    job_id, _ = add_job(session_factory, status, {"a.png": ScanStatus.PENDING})
    assert resume_job(job_id, session_factory, app=app) == 1
    assert [m["args"] for m in queued(redis_server, ENUMERATE_QUEUE)] == [[job_id]]
    assert queued(redis_server, DEFAULT_QUEUE) == []


def test_resume_queues_every_pending_scan_once(app, redis_server, session_factory, settings_env):
    settings_env(batch_size=2)
    states = {f"{i}.png": ScanStatus.DONE if i % 3 == 0 else ScanStatus.PENDING for i in range(8)}
    job_id, pending = add_job(session_factory, JobStatus.RUNNING, states)
    assert resume_job(job_id, session_factory, app=app) == 3
    sent = [m["args"] for m in queued(redis_server, DEFAULT_QUEUE)]
    assert all(job == job_id and len(ids) <= 2 for job, ids in sent)
    assert sorted(i for _, ids in sent for i in ids) == sorted(pending)


def test_resume_finishes_a_job_with_nothing_pending(app, redis_server, session_factory):
    job_id, _ = add_job(session_factory, JobStatus.RUNNING, {"a.png": ScanStatus.DONE})
    assert resume_job(job_id, session_factory, app=app) == 1
    assert [m["args"] for m in queued(redis_server, DEFAULT_QUEUE)] == [[job_id, []]]


@pytest.mark.parametrize("status", [JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED])
def test_resume_leaves_closed_jobs_alone(app, redis_server, session_factory, status):
    job_id, _ = add_job(session_factory, status, {"a.png": ScanStatus.PENDING})
    assert resume_job(job_id, session_factory, app=app) == 0
    assert redis_server.client().dbsize() == 0


def test_producers_import_neither_tensorflow_nor_the_tasks():
    code = ("import sys, worker.queue, worker.celery_app; "
            "print(sorted({'tensorflow', 'keras', 'worker.tasks'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_worker_parent_does_not_import_tensorflow():
    # The pool forks from the parent: TensorFlow imported there would hang the children.
    code = "import sys, worker.tasks; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_batch_time_limit_is_a_setting_and_redis_outwaits_it(monkeypatch):
    from worker.celery_app import celery_config

    monkeypatch.setenv("TUMORLENS_BATCH_TIME_LIMIT", "7200")
    config = celery_config(Settings())
    assert (config["task_soft_time_limit"], config["task_time_limit"]) == (7200, 7260)
    assert config["broker_transport_options"]["visibility_timeout"] > 7260
    default = celery_config(Settings(batch_time_limit=600))
    assert default["task_soft_time_limit"] == 600
    assert default["broker_transport_options"]["visibility_timeout"] > 60 * 60  # the walk's limit
    with pytest.raises(ValueError, match="batch_time_limit"):
        Settings(batch_time_limit=0)
