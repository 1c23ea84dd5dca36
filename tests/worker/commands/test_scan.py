"""The store and job commands: db upgrade, user create, cancel/resume, neurons, messages, progress."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.builders.scans import write_good_scans
from tests.conftest import PROJECT_ROOT
from tests.test_end_to_end import small_model, tumorlens
from worker.db import current_revision, head_revision, make_session_factory, session_scope
from worker.models import JobStatus, User


def test_db_upgrade_creates_the_embedded_store(settings):
    result = tumorlens("db", "upgrade")
    assert (settings.home / "tumorlens.db").is_file()
    assert current_revision(settings.database_url) == head_revision()
    assert f"is at revision {head_revision()}" in result.output


def test_user_create_hashes_the_password_and_refuses_a_taken_name(settings):
    assert "created user 'ana'" in tumorlens("user", "create", "ana", "--password", "pw-1").output
    again = tumorlens("user", "create", "ana", "--password", "pw-2", expect=1)
    assert "already exists" in again.output
    with session_scope(make_session_factory(settings.database_url)) as session:
        (user,) = session.scalars(select(User))
        assert user.username == "ana" and "pw-1" not in user.password_hash


def test_a_database_that_is_not_migrated_asks_for_db_upgrade(settings_env, tmp_path):
    settings_env(database_url=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    result = tumorlens("export", "1", expect=1)
    assert "not at the current schema" in result.output and "tumorlens db upgrade" in result.output


def test_an_unreachable_broker_is_named_with_what_to_do(settings_env, tmp_path):
    settings_env(broker_url="redis://127.0.0.1:9/0")
    write_good_scans(tmp_path / "scans", 1)
    result = tumorlens("scan", tmp_path / "scans", "--model", small_model(tmp_path), expect=1)
    assert "cannot reach the broker" in result.output and "--local" in result.output


def test_cancel_then_resume_finishes_the_job(settings, tmp_path):
    write_good_scans(tmp_path / "scans", 3, size=(40, 40))
    model = small_model(tmp_path)
    tumorlens("db", "upgrade")
    factory = make_session_factory(settings.database_url)
    from pipeline.model.spec import load_spec
    from worker.jobs import create_job

    with session_scope(factory) as session:
        job_id = create_job(session, tmp_path / "scans", load_spec(model), "gradcam").id
    assert f"job {job_id} cancelled" in tumorlens("cancel", job_id).output
    resumed = tumorlens("resume", job_id, "--local", "--json")
    assert "ETA" not in resumed.output  # no terminal here: no progress bar
    summary = json.loads(resumed.stdout)
    assert (summary["status"], summary["done"]) == ("done", 3)
    assert "already finished" in tumorlens("cancel", job_id, expect=1).output
    again = json.loads(tumorlens("resume", job_id, "--json").stdout)
    assert again["status"] == "done" and again["done"] == 3


def test_neurons_reports_the_strongest_neurons_and_the_label_source(settings, tmp_path):
    write_good_scans(tmp_path / "scans" / "yes", 4, size=(40, 40), seed=1)
    write_good_scans(tmp_path / "scans" / "no", 4, size=(40, 40), seed=2)
    job = json.loads(tumorlens("scan", tmp_path / "scans", "--local", "--json", "--model",
                               small_model(tmp_path)).stdout)["job"]
    report = json.loads(tumorlens("neurons", job, "--top", "2", "--json").stdout)
    assert report["label_source"] == "folder" and report["n_scans"] == 8
    assert report["n_neurons"] == 8
    ranked = report["top_positive"] + report["top_negative"]
    assert 0 < len(report["top_positive"]) <= 2 and len(report["top_negative"]) <= 2
    for row in ranked:
        assert -1 <= row["correlation"] <= 1 and set(row["mean_activation"]) == {"tumor", "no_tumor"}
    text = tumorlens("neurons", job).output
    assert "labels from folder" in text and f"neuron {ranked[0]['neuron']:>5}" in text


def test_neurons_of_an_unfinished_job_says_so(settings, tmp_path):
    tumorlens("db", "upgrade")
    from pipeline.model.spec import load_spec
    from worker.jobs import create_job

    with session_scope(make_session_factory(settings.database_url)) as session:
        job_id = create_job(session, tmp_path, load_spec(small_model(tmp_path)), "cam").id
    assert "no neuron statistics yet (it is pending)" in tumorlens("neurons", job_id, expect=1).output


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_with_rate_and_eta(settings, tmp_path):
    write_good_scans(tmp_path / "scans", 6, size=(40, 40))
    env = {**os.environ, "TUMORLENS_HOME": str(settings.home), "COLUMNS": "120",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    primary, secondary = pty.openpty()
    command = [sys.executable, "-c", "from worker.cli import main; main(prog_name='tumorlens')",
               "scan", str(tmp_path / "scans"), "--local", "--batch-size", "2", "--model",
               str(small_model(tmp_path))]
    proc = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary,
                            env=env, cwd=PROJECT_ROOT)
    os.close(secondary)
    output = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", _read_all(primary))  # drop colours, cursor moves
    assert proc.wait(timeout=60) == 0, output
    assert "ETA" in output and "scans/s" in output and "6/6" in output
    assert "job 1 done: 6 scans, 6 done, 0 failed, 0 duplicate" in output


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def test_a_job_can_be_cancelled_only_while_open(settings, tmp_path):
    assert "no job 5" in tumorlens("cancel", "5", expect=1).output
    assert JobStatus.CANCELLED.value == "cancelled"
