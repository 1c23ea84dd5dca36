"""``tumorlens neurons``: the neurons of a job's target layer most correlated with the class."""

from __future__ import annotations

import json

from tests.builders.cli import small_model, tumorlens
from tests.builders.scans import write_good_scans
from worker.db import make_session_factory, session_scope


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
