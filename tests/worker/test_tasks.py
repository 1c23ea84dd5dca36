"""Queued jobs on real worker processes over a private Redis, on SQLite and PostgreSQL.

Nothing here runs Celery eagerly: every job goes through ``tumorlens worker`` processes, and
the failures are real ones (a pool process SIGKILLed, Redis killed and restarted empty, a
decoder that kills its process, a decoder that hangs until the batch time limit stops it, an
import of TensorFlow slower than that limit).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from tests.builders.processes import (SLOW_IMPORT_ENV, ProcessGroup, RedisServer, log_text,
                                      pool_children, run_cli, start_worker, tumorlens_argv,
                                      tumorlens_env, wait_for, write_hang, write_poison)
from tests.builders.scans import write_good_scans
from tests.builders.shapes import FAULTS, write_shape
from tests.conftest import PROJECT_ROOT
from worker.db import make_session_factory, session_scope
from worker.models import Job, Result, Scan, ScanStatus
from worker.store import job_summary

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("worker-processes")]

N_SCANS = 200
BATCH_SIZE = 8
SCAN_SIZE = (40, 40)
JOB_TIMEOUT = 300
# Seconds. A pool process's first batch imports TensorFlow and loads the model: 3-4 s on a
# 2-core machine that is training a model at the same time, the others take well under 1 s.
# The limit must only ever stop a hanging batch, never a slow first one; each test waits it out
# two or three times, so it is not larger than that margin needs.
BATCH_TIME_LIMIT = 30
OUT_OF_TIME = "reject requeue=True: SoftTimeLimitExceeded"  # a batch given back, in the worker log
# Modules a pool process first imports on its first batch, made slower than the limit there.
SLOW_STEPS = {
    # Cut short here, TensorFlow's import leaves the process unable to import it again
    # ("Name tf.RaggedTensorSpec has already been registered").
    "tensorflow-import": "tensorflow.python.ops.lookup_grad",
    # Reading the .keras archive's member names; Keras reports a failure as "cannot load".
    "model-load": "encodings.cp437",
}


@pytest.fixture(scope="module")
def model_json(tmp_path_factory) -> Path:
    from tests.builders.models import build_model

    return build_model(tmp_path_factory.mktemp("model"), "sequential", input_size=(32, 32))


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scans")
    write_good_scans(root / "yes", N_SCANS // 2, size=SCAN_SIZE, seed=1)
    write_good_scans(root / "no", N_SCANS // 2, size=SCAN_SIZE, seed=2)
    return root


def exported(env: dict[str, str], job_id: int) -> list[dict]:
    """Return the job's JSON export with output paths relative to the output folder."""
    rows = json.loads(run_cli(env, "export", str(job_id), "--format", "json").stdout)
    prefix = env["TUMORLENS_OUTPUT_DIR"] + "/"
    for row in rows:
        for key in ("overlay", "heatmap"):
            if row[key]:
                row[key] = row[key].removeprefix(prefix)
    return rows


@pytest.fixture(scope="module")
def local_export(tmp_path_factory, model_json: Path, scan_folder: Path) -> list[dict]:
    """The folder analysed in-process (``scan --local``) in a store of its own."""
    home = tmp_path_factory.mktemp("local")
    env = tumorlens_env(home, output_dir=home / "outputs", model=model_json, batch_size=BATCH_SIZE)
    summary = json.loads(run_cli(env, "scan", str(scan_folder), "--local", "--json").stdout)
    assert summary["done"] == N_SCANS
    return exported(env, summary["job"])


class Cluster:
    """A private Redis, workers, and the store of one test."""

    def __init__(self, tmp_path: Path, database_url: str, model_json: Path) -> None:
        self.group = ProcessGroup(tmp_path / "logs")
        self.redis = RedisServer(self.group, tmp_path / "redis").start()
        self.env = tumorlens_env(tmp_path / "home", database_url, self.redis.url,
                                 output_dir=tmp_path / "outputs", model=model_json,
                                 batch_size=BATCH_SIZE)
        self.factory = make_session_factory(database_url)
        self.workers = []

    def start_workers(self, count: int) -> list:
        """Start ``count`` worker processes (one pool process each) and wait until they are ready."""
        self.workers += [start_worker(self.group, self.env, f"worker{len(self.workers) + i}")
                         for i in range(count)]
        return self.workers

    def scan(self, folder: Path) -> int:
        """Queue a job over ``folder`` through the CLI; return its id."""
        return json.loads(run_cli(self.env, "scan", str(folder), "--json").stdout)["job"]

    def summary(self, job_id: int) -> dict:
        with session_scope(self.factory) as session:
            return job_summary(session, job_id)

    def wait(self, job_id: int, timeout: float = JOB_TIMEOUT) -> dict:
        """Wait until the job ends; fail with the workers' logs if it does not."""
        deadline = time.monotonic() + timeout
        while (summary := self.summary(job_id))["status"] not in ("done", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not end: {summary}\n{self.logs()}")
            time.sleep(0.2)
        return summary

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{log_text(w)[-6000:]}" for w in self.workers)

    def results_per_scan(self, job_id: int) -> dict[int, int]:
        """Return, for each done scan of the job, how many results it has."""
        query = (select(Scan.id, func.count(Result.id)).join(Result, Result.scan_id == Scan.id)
                 .where(Scan.job_id == job_id).group_by(Scan.id))
        with session_scope(self.factory) as session:
            return dict(session.execute(query).all())

    def scans(self, job_id: int, **where) -> list[Scan]:
        query = select(Scan).where(Scan.job_id == job_id).filter_by(**where).order_by(Scan.id)
        with session_scope(self.factory) as session:
            return list(session.scalars(query))


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, model_json: Path):
    cluster = Cluster(tmp_path, database_url, model_json)
    try:
        yield cluster
    finally:
        cluster.group.close()


def assert_complete(cluster: Cluster, job_id: int, summary: dict, scans: int = N_SCANS) -> None:
    """Every scan done, each with exactly one result."""
    assert summary["status"] == "done", cluster.logs()
    assert (summary["scans"], summary["done"], summary["failed"]) == (scans, scans, 0)
    per_scan = cluster.results_per_scan(job_id)
    assert len(per_scan) == scans and set(per_scan.values()) == {1}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_queued_job_matches_a_local_run(cluster, scan_folder, local_export, workers):
    cluster.start_workers(workers)
    job_id = cluster.scan(scan_folder)
    assert_complete(cluster, job_id, cluster.wait(job_id))
    assert exported(cluster.env, job_id) == local_export


def claimed_batch(cluster: Cluster, job_id: int) -> list[int]:
    """Return the scans a batch has claimed (attempt counted) and not yet committed."""
    return [s.id for s in cluster.scans(job_id, status=ScanStatus.PENDING) if s.attempts]


def kill_a_batch_in_flight(cluster: Cluster, worker, job_id: int, tries: int = 40) -> list[int]:
    """SIGKILL the worker's pool process while it holds a claimed batch; return that batch."""
    for _ in range(tries):
        wait_for(lambda: len(pool_children(worker)) == 1, "the worker's pool process")
        claimed = wait_for(lambda: claimed_batch(cluster, job_id), "a batch in flight", every=0.01)
        children = pool_children(worker)
        for child in children:
            child.send_signal(signal.SIGKILL)
        # A signal is delivered, not obeyed at once: a commit already on its way can still land.
        # Only once the process is gone, and the store has had a moment, does pending tell.
        psutil.wait_procs(children, timeout=10)
        time.sleep(0.2)
        pending = {scan.id for scan in cluster.scans(job_id, status=ScanStatus.PENDING)}
        if set(claimed) <= pending:
            return claimed  # killed before the batch committed
    raise AssertionError(f"never caught a batch in flight in {tries} tries")


def test_a_killed_worker_process_loses_nothing(cluster, scan_folder):
    [worker] = cluster.start_workers(1)
    job_id = cluster.scan(scan_folder)
    wait_for(lambda: cluster.summary(job_id)["done"] >= BATCH_SIZE, "the first batch")
    killed = kill_a_batch_in_flight(cluster, worker, job_id)
    assert_complete(cluster, job_id, cluster.wait(job_id))
    assert "WorkerLostError" in log_text(worker)
    assert all(scan.attempts >= 2 for scan in cluster.scans(job_id) if scan.id in killed)


def test_resume_after_the_broker_lost_its_queue(cluster, scan_folder):
    cluster.start_workers(1)
    job_id = cluster.scan(scan_folder)
    wait_for(lambda: cluster.summary(job_id)["done"] >= 2 * BATCH_SIZE, "some batches done")
    cluster.redis.restart_empty()
    time.sleep(3)  # the worker reconnects and finds at most the batch it had in hand
    assert cluster.redis.client().llen("tumorlens") <= 1
    stalled = cluster.summary(job_id)
    assert stalled["status"] == "running" and stalled["done"] < N_SCANS - 2 * BATCH_SIZE
    summary = json.loads(run_cli(cluster.env, "resume", str(job_id), "--wait", "--json",
                                 timeout=JOB_TIMEOUT).stdout)
    assert_complete(cluster, job_id, summary)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a store-neutral path
def test_cancel_skips_queued_batches_and_resume_finishes(cluster, scan_folder):
    walker = start_worker(cluster.group, cluster.env, "walker", 1, "--queues=tumorlens.enumerate")
    cluster.workers.append(walker)
    job_id = cluster.scan(scan_folder)
    batches = -(-N_SCANS // BATCH_SIZE)
    wait_for(lambda: cluster.redis.client().llen("tumorlens") == batches, "the walk to queue")
    run_cli(cluster.env, "cancel", str(job_id))
    worker = cluster.start_workers(1)[-1]
    wait_for(lambda: log_text(worker).count("'skipped': 'job closed'") == batches,
             "every queued batch to be skipped")
    assert cluster.summary(job_id)["status"] == "cancelled"
    assert cluster.results_per_scan(job_id) == {}
    summary = json.loads(run_cli(cluster.env, "resume", str(job_id), "--wait", "--json",
                                 timeout=JOB_TIMEOUT).stdout)
    assert_complete(cluster, job_id, summary)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_whose_model_changed_fails_saying_why(cluster, scan_folder, model_json, tmp_path):
    model = Path(shutil.copytree(model_json.parent, tmp_path / "model")) / model_json.name
    walker = start_worker(cluster.group, cluster.env, "walker", 1, "--queues=tumorlens.enumerate")
    cluster.workers.append(walker)
    job_id = json.loads(run_cli(cluster.env, "scan", str(scan_folder), "--model", str(model),
                                "--json").stdout)["job"]
    wait_for(lambda: cluster.summary(job_id)["status"] == "running", "the walk")
    weights = model.parent / json.loads(model.read_text())["file"]
    weights.write_bytes(weights.read_bytes() + b"changed")
    cluster.start_workers(1)
    summary = cluster.wait(job_id)
    assert (summary["status"], summary["done"]) == ("failed", 0)
    with session_scope(cluster.factory) as session:
        error = session.get(Job, job_id).error
    assert "the job's model cannot be used" in error and "has changed since" in error


def test_a_model_that_cannot_be_prepared_fails_the_queued_job_once_and_resume_takes_the_fix(
        cluster, scan_folder, tmp_path):
    build, _ = FAULTS["two-outputs-unchosen"]  # loads, but which output holds the scores?
    model = write_shape(tmp_path / "two-heads", build)
    cluster.start_workers(1)
    waited = subprocess.run(tumorlens_argv("scan", str(scan_folder), "--model", str(model), "--wait"),
                            env=cluster.env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "the model two-heads cannot be analysed" in waited.stderr and '"model_output"' in waited.stderr
    with session_scope(cluster.factory) as session:
        job = session.scalars(select(Job).order_by(Job.id.desc())).first()
        job_id, error = job.id, job.error
    assert error.count("cannot be analysed") == 1 and '0 "diagnosis"' in error
    assert cluster.scans(job_id, status=ScanStatus.FAILED) == []  # no scan blamed for the model
    assert all(scan.attempts == 0 for scan in cluster.scans(job_id))  # none was even claimed
    spec = json.loads(model.read_text())
    model.write_text(json.dumps({**spec, "model_output": "diagnosis"}))
    run_cli(cluster.env, "resume", str(job_id))
    assert_complete(cluster, job_id, cluster.wait(job_id))


def test_a_scan_that_kills_its_worker_fails_and_the_rest_complete(cluster, tmp_path):
    folder = tmp_path / "scans"
    write_good_scans(folder, 3 * BATCH_SIZE, size=SCAN_SIZE, seed=3)
    write_poison(folder / "scan_3_010b.jpg")  # sorted into the middle of the second batch
    [worker] = cluster.start_workers(1)
    job_id = cluster.scan(folder)
    summary = cluster.wait(job_id)
    assert summary["status"] == "done", cluster.logs()
    assert (summary["done"], summary["failed"]) == (3 * BATCH_SIZE, 1)
    [poisoned] = cluster.scans(job_id, status=ScanStatus.FAILED)
    assert poisoned.path == "scan_3_010b.jpg"
    assert "started 3 times" in poisoned.error
    assert log_text(worker).count("WorkerLostError") >= 2


def test_a_scan_that_hangs_its_batch_fails_and_the_rest_complete(cluster, tmp_path):
    folder = tmp_path / "scans"
    write_good_scans(folder, 3 * BATCH_SIZE, size=SCAN_SIZE, seed=4)
    write_hang(folder / "scan_4_010b.jpg")  # sorted into the middle of the second batch
    cluster.env["TUMORLENS_BATCH_TIME_LIMIT"] = str(BATCH_TIME_LIMIT)
    [worker] = cluster.start_workers(1)
    job_id = cluster.scan(folder)
    summary = cluster.wait(job_id, timeout=JOB_TIMEOUT + 3 * BATCH_TIME_LIMIT)
    assert summary["status"] == "done", cluster.logs()
    assert (summary["done"], summary["failed"]) == (3 * BATCH_SIZE, 1), cluster.logs()
    per_scan = cluster.results_per_scan(job_id)
    assert len(per_scan) == 3 * BATCH_SIZE and set(per_scan.values()) == {1}
    [hung] = cluster.scans(job_id, status=ScanStatus.FAILED)
    assert hung.path == "scan_4_010b.jpg"
    assert "started 3 times" in hung.error and "ran out of time" in hung.error, hung.error
    assert log_text(worker).count(OUT_OF_TIME) == 2  # its batch, then the scan alone


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a store-neutral path
@pytest.mark.parametrize("step", SLOW_STEPS)
def test_a_first_batch_slower_than_the_limit_still_completes(cluster, tmp_path, step):
    folder = tmp_path / "scans"
    write_good_scans(folder, 2 * BATCH_SIZE, size=SCAN_SIZE, seed=5)
    cluster.env["TUMORLENS_BATCH_TIME_LIMIT"] = str(BATCH_TIME_LIMIT)
    delay = BATCH_TIME_LIMIT + 10  # past the soft limit, well before the hard one
    slow = {**cluster.env, SLOW_IMPORT_ENV: f"{SLOW_STEPS[step]}:{delay}"}
    worker = start_worker(cluster.group, slow, "worker")
    cluster.workers.append(worker)
    job_id = cluster.scan(folder)
    summary = cluster.wait(job_id, timeout=JOB_TIMEOUT + 2 * BATCH_TIME_LIMIT)
    assert log_text(worker).count(OUT_OF_TIME) == 1, cluster.logs()
    assert_complete(cluster, job_id, summary, scans=2 * BATCH_SIZE)
