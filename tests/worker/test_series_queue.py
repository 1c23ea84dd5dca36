"""A DICOM archive queued to a real worker over a private Redis gives what ``scan --local`` gives.

The walk task reads the headers and skips series in the worker's process, the batches run in its
pool, the series are ordered and concluded by whichever batch finishes the job: the per-scan and
the series export must still match an in-process run of the same folder, record for record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders.archives import write_archive
from tests.builders.processes import run_cli, tumorlens_env
from tests.builders.scans import write_good_scans
from tests.worker import test_tasks
from tests.worker.test_tasks import BATCH_SIZE, Cluster, exported

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("worker-processes")]

SKIPPED_SLICES = 15  # the archive's localizer, knee and CT series


model_json = test_tasks.model_json  # the queue tests' small model, built once per module


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The mixed archive of ``tests.builders.archives`` and two JPEGs beside it."""
    root = tmp_path_factory.mktemp("archive")
    write_archive(root)
    write_good_scans(root / "photos", 2, size=(40, 40), seed=3)
    return root


def exports(env: dict[str, str], job_id: int) -> tuple[list[dict], list[dict]]:
    """Return the job's per-scan export (output paths relative) and its series export."""
    series = json.loads(run_cli(env, "export", str(job_id), "--format", "series").stdout)
    return exported(env, job_id), series


@pytest.fixture(scope="module")
def local_exports(tmp_path_factory, model_json: Path, archive: Path) -> tuple[list[dict], list[dict]]:
    home = tmp_path_factory.mktemp("local")
    env = tumorlens_env(home, output_dir=home / "outputs", model=model_json, batch_size=BATCH_SIZE)
    summary = json.loads(run_cli(env, "scan", str(archive), "--local", "--json").stdout)
    assert (summary["status"], summary["skipped"], summary["series"]) == ("done", SKIPPED_SLICES, 9)
    return exports(env, summary["job"])


def test_a_queued_dicom_archive_matches_a_local_run(tmp_path, database_url, model_json, archive,
                                                     local_exports):
    cluster = Cluster(tmp_path, database_url, model_json)
    try:
        cluster.start_workers(1)
        job_id = cluster.scan(archive)
        summary = cluster.wait(job_id)
        assert (summary["status"], summary["skipped"]) == ("done", SKIPPED_SLICES), cluster.logs()
        per_scan, series = exports(cluster.env, job_id)
    finally:
        cluster.group.close()
    local_scans, local_series = local_exports
    assert sum(r["series"] is not None and r["slice_index"] is not None for r in per_scan) > 30
    assert per_scan == local_scans
    assert len(series) == 9 and sum(s["tumor_probability"] is not None for s in series) == 5
    assert series == local_series
