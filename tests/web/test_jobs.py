"""Starting, cancelling and resuming jobs from the pages and the API, against a real Redis broker."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from tests.web import seed
from tests.web.conftest import csrf_token
from tests.web.seed import png, zip_of
from worker.celery_app import ENUMERATE_QUEUE, PROCESS_TASK
from worker.models import Job, JobStatus, ScanStatus


def queued(url: str, queue: str) -> list[tuple[str, list]]:
    """Return (task name, args) of the messages waiting in a Redis queue, oldest first."""
    messages = [json.loads(raw) for raw in reversed(redis.Redis.from_url(url).lrange(queue, 0, -1))]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


@pytest.fixture
def queue_app(make_app, redis_url):
    return make_app(BROKER_URL=redis_url)


@pytest.fixture
def client_q(queue_app, user_id):
    from tests.web.conftest import PASSWORD, sign_in

    client = queue_app.test_client()
    sign_in(client, "alice", PASSWORD)
    return client


def fresh(session, job_id: int) -> Job:
    """Return the job as the app committed it (new transaction, nothing cached)."""
    session.rollback()
    session.expire_all()
    return session.get(Job, job_id)


def token(client) -> str:
    return csrf_token(client.get("/jobs/new").get_data(as_text=True))


def form(client, **values) -> dict:
    return {"csrf_token": token(client), "model": "default", "method": "gradcam", **values}


def test_folder_job_is_committed_then_queued(client_q, session, folders, redis_url):
    (folders["scans"] / "study").mkdir()
    response = client_q.post("/jobs", data=form(client_q, root="0", path="study"))
    job = session.query(Job).one()
    assert response.headers["Location"] == f"/jobs/{job.id}"
    assert job.root == str((folders["scans"] / "study").resolve()) and job.method == "gradcam"
    assert job.status is JobStatus.PENDING and job.created_by_id is not None
    assert queued(redis_url, ENUMERATE_QUEUE) == [("tumorlens.enumerate", [job.id])]


def test_api_starts_a_job(client_q, session, redis_url):
    response = client_q.post("/api/jobs", json={"root": 0, "path": "", "method": "layercam"},
                             headers={"X-CSRFToken": token(client_q)})
    assert response.status_code == 201
    body = response.get_json()
    assert body["method"] == "layercam" and body["status"] == "pending"
    assert queued(redis_url, ENUMERATE_QUEUE) == [("tumorlens.enumerate", [body["id"]])]


@pytest.mark.parametrize("values, message", [
    ({"method": "magic"}, "Choose one of the CAM methods"),
    ({"model": "42"}, "Choose one of the listed models"),
    ({"root": "3"}, "That scan root does not exist"),
])
def test_bad_choices_record_and_queue_nothing(client_q, session, redis_url, values, message):
    response = client_q.post("/jobs", data=form(client_q, **{"root": "0", "path": "", **values}),
                             follow_redirects=True)
    assert message in response.get_data(as_text=True)
    assert session.query(Job).count() == 0 and queued(redis_url, ENUMERATE_QUEUE) == []


def test_unusable_model_is_explained(client_q, session, folders):
    (folders["model"] / "model.json").write_text("{not json")
    response = client_q.post("/jobs", data=form(client_q, root="0", path=""), follow_redirects=True)
    assert "cannot be used" in response.get_data(as_text=True)
    assert session.query(Job).count() == 0


def test_unreachable_broker_keeps_the_job_and_says_so(make_app, user_id, session):
    from tests.web.conftest import PASSWORD, sign_in

    client = make_app(BROKER_URL="redis://127.0.0.1:1/0").test_client()
    sign_in(client, "alice", PASSWORD)
    response = client.post("/jobs", data=form(client, root="0", path=""), follow_redirects=True)
    assert "is recorded but the task queue could not take it" in response.get_data(as_text=True)
    assert session.query(Job).one().status is JobStatus.PENDING  # resumable once Redis is back


def test_without_a_broker_the_form_is_disabled_and_posting_is_refused(signed_in, session):
    page = signed_in.get("/jobs/new").get_data(as_text=True)
    assert "No task queue is configured" in page and "disabled" in page
    response = signed_in.post("/jobs", data=form(signed_in, root="0", path=""), follow_redirects=True)
    assert "tumorlens scan FOLDER --local" in response.get_data(as_text=True)
    assert session.query(Job).count() == 0


def test_upload_is_stored_and_queued(client_q, session, folders, redis_url):
    import io

    data = form(client_q, scans=(io.BytesIO(zip_of({"YES/a.png": png(), "NO/b.png": png()})), "s.zip"))
    response = client_q.post("/jobs/upload", data=data, content_type="multipart/form-data")
    job = session.query(Job).one()
    assert response.headers["Location"] == f"/jobs/{job.id}"
    stored = sorted(p.name for p in folders["uploads"].rglob("*.png"))
    assert stored == ["a.png", "b.png"] and job.root.startswith(str(folders["uploads"].resolve()))
    assert queued(redis_url, ENUMERATE_QUEUE) == [("tumorlens.enumerate", [job.id])]


@pytest.fixture
def running(session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json", JobStatus.RUNNING)
    seed.add_rows(session, job, [seed.Row("a.png", 0.4), seed.Row("b.png", None, ScanStatus.PENDING),
                                 seed.Row("c.png", None, ScanStatus.PENDING)])
    session.commit()
    return job


def test_cancel_then_resume_from_the_report(client_q, session, running, redis_url):
    response = client_q.post(f"/jobs/{running.id}/cancel", data={"csrf_token": token(client_q)},
                             follow_redirects=True)
    assert f"Job {running.id} is cancelled." in response.get_data(as_text=True)
    assert fresh(session, running.id).status is JobStatus.CANCELLED
    assert 'action="/jobs/%d/resume"' % running.id in response.get_data(as_text=True)

    response = client_q.post(f"/jobs/{running.id}/resume", data={"csrf_token": token(client_q)},
                             follow_redirects=True)
    assert f"Job {running.id} is queued again." in response.get_data(as_text=True)
    assert fresh(session, running.id).status is JobStatus.PENDING  # the walk runs again
    assert queued(redis_url, ENUMERATE_QUEUE) == [("tumorlens.enumerate", [running.id])]


def test_api_resume_of_a_running_job_requeues_its_pending_scans(client_q, running, redis_url):
    response = client_q.post(f"/api/jobs/{running.id}/resume", headers={"X-CSRFToken": token(client_q)})
    assert response.status_code == 200 and response.get_json()["status"] == "running"
    tasks = queued(redis_url, "tumorlens")
    assert [name for name, _ in tasks] == [PROCESS_TASK] and tasks[0][1][0] == running.id
    assert len(tasks[0][1][1]) == 2  # the two pending scans


def test_api_cancel_twice_is_no_error(client_q, running):
    headers = {"X-CSRFToken": token(client_q)}
    first = client_q.post(f"/api/jobs/{running.id}/cancel", headers=headers)
    assert first.get_json()["status"] == "cancelled" and first.get_json()["finished"] is True
    again = client_q.post(f"/api/jobs/{running.id}/cancel", headers=headers)
    assert again.status_code == 200 and again.get_json()["status"] == "cancelled"


def test_cancel_a_finished_job_is_refused_in_words(client_q, session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json", JobStatus.DONE)
    session.commit()
    response = client_q.post(f"/api/jobs/{job.id}/cancel", headers={"X-CSRFToken": token(client_q)})
    assert response.status_code == 409 and "already finished" in response.get_json()["error"]
