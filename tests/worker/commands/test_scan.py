"""``tumorlens scan``, ``cancel`` and ``resume``: messages, progress, and a job stopped and finished."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from tests.builders.scans import write_good_scans
from tests.conftest import PROJECT_ROOT
from tests.builders.cli import small_model, tumorlens
from worker.db import make_session_factory, session_scope
from worker.models import JobStatus


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
