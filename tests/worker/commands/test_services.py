"""``tumorlens worker``, ``web`` and ``up`` as the real processes they start."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from tests.builders.processes import (ProcessGroup, RedisServer, descendants, free_port,
                                      log_text, pool_children, run_cli, start_worker,
                                      tumorlens_argv, tumorlens_env, wait_for)
from tests.builders.scans import write_good_scans
from worker.cli import main
from worker.commands.services import cpu_count, tensorflow_env, web_argv
from worker.db import make_session_factory, session_scope
from worker.models import Job, JobStatus, Model

@pytest.fixture
def group(tmp_path: Path):
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.close()


def test_worker_needs_a_broker(settings):
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code != 0
    assert "TUMORLENS_BROKER_URL" in result.output


def test_tensorflow_threads_share_the_cores():
    cores = cpu_count()
    assert tensorflow_env(1)["TF_NUM_INTRAOP_THREADS"] == str(cores)
    assert tensorflow_env(cores)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert tensorflow_env(4 * cores)["TF_NUM_INTEROP_THREADS"] == "1"  # never zero


def test_web_runs_the_app_from_its_import_string():
    production = web_argv("0.0.0.0", 8000, production=True, workers=3)
    assert production[1:3] == ["-m", "gunicorn"] and production[-1] == "web:create_app()"
    assert ["--bind", "0.0.0.0:8000"] == production[3:5] and "--workers" in production
    development = web_argv("127.0.0.1", 5000, production=False, workers=None)
    assert development[1:5] == ["-m", "flask", "--app", "web:create_app()"]


def add_empty_job(database_url: str, root: Path) -> int:
    """Record a job over an empty folder (its walk needs no model)."""
    root.mkdir()
    with session_scope(make_session_factory(database_url)) as session:
        model = Model(digest="1" * 64, name="m", spec_path="/nowhere/model.json",
                      spec={"positive_classes": ["tumor"]})
        job = Job(root=str(root), model=model, method="gradcam", status=JobStatus.PENDING)
        session.add(job)
        session.flush()
        return job.id


@pytest.mark.xdist_group("worker-processes")
def test_worker_shares_cores_and_names_jobs_in_its_log(group, tmp_path, database_url):
    from worker.celery_app import create_celery_app
    from worker.queue import enqueue_job
    from worker.settings import Settings

    redis = RedisServer(group, tmp_path / "redis").start()
    env = tumorlens_env(tmp_path / "home", database_url, redis.url)
    worker = start_worker(group, env, concurrency=2)
    assert len(pool_children(worker)) == 2
    threads = max(1, cpu_count() // 2)
    assert f"2 worker processes on {cpu_count()} cores, {threads} TensorFlow threads each" in log_text(worker)
    job_id = add_empty_job(database_url, tmp_path / "empty")
    enqueue_job(job_id, app=create_celery_app(Settings(broker_url=redis.url)))
    wait_for(lambda: f"job {job_id} tumorlens.enumerate[" in log_text(worker), "the walk's log line")
    with session_scope(make_session_factory(database_url)) as session:
        assert session.get(Job, job_id).status is JobStatus.DONE  # nothing to analyse


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("mode", ["--development", "--production"])
def test_web_serves_health(group, tmp_path, mode):
    port = free_port()
    env = tumorlens_env(tmp_path / "home")
    run_cli(env, "db", "upgrade")
    web = group.start("web", tumorlens_argv("web", mode, "--port", str(port)), env)
    status = wait_for(lambda: web.poll() is not None or _answer(f"http://127.0.0.1:{port}/healthz"),
                      "the web server", timeout=60)
    assert web.poll() is None, log_text(web)
    assert status[0] == 200 and status[1]["status"] == "ok"
    server = "gunicorn" if mode == "--production" else "flask"
    assert server in " ".join(psutil.Process(web.pid).cmdline())  # exec'd: same process


def _answer(url: str):
    try:
        return get(url)
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.xdist_group("worker-processes")
def test_up_runs_everything_and_stops_everything(group, tmp_path):
    from tests.builders.models import build_model

    model = build_model(tmp_path / "model", "sequential", input_size=(32, 32))
    folder = tmp_path / "scans"
    write_good_scans(folder, 12, size=(40, 40))
    web_port, redis_port = free_port(), free_port()
    env = tumorlens_env(tmp_path / "home", model=model, batch_size=4)
    up = group.start("up", tumorlens_argv("up", "--port", str(web_port), "--redis-port",
                                          str(redis_port), "--stop-timeout", "20"), env)
    wait_for(lambda: up.poll() is not None or "tumorlens is up" in log_text(up), "up", timeout=120)
    assert up.poll() is None, log_text(up)
    children = descendants(up.pid)
    assert len(children) >= 4, children  # redis, worker (+ its pool), web

    queued = {**env, "TUMORLENS_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0"}
    summary = json.loads(run_cli(queued, "scan", str(folder), "--wait", "--json").stdout)
    assert (summary["status"], summary["done"]) == ("done", 12)
    assert get(f"http://127.0.0.1:{web_port}/healthz")[1]["checks"]["broker"] == "ok"

    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=90) == 0, log_text(up)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    output = log_text(up)
    for prefix in ("redis |", "db    |", "worker|", "web   |"):
        assert prefix in output
