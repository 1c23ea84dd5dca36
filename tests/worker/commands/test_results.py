"""``tumorlens neurons``: the neurons of a job's target layer most correlated with the class."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_export_overlays_draws_the_eager_bytes_and_tells_the_scans_it_cannot_draw(settings, tmp_path):
    import numpy as np

    from tests.builders.scans import make_dicom, synthetic_slice

    scans = tmp_path / "scans"
    write_good_scans(scans / "yes", 4, size=(40, 36), seed=1)
    make_dicom(scans / "series.dcm", [synthetic_slice(np.random.default_rng(i), (30, 30)) for i in range(3)])
    model = small_model(tmp_path)
    eager = json.loads(tumorlens("scan", scans, "--local", "--json", "--model", model,
                                 "--method", "cam", "--overlays", "eager").stdout)["job"]
    eager_records = {(r["path"], r["frame"]): r for r in json.loads(tumorlens("export", eager).stdout)}
    assert all(r["overlay"] and tmp_path.joinpath(r["overlay"]).is_file() for r in eager_records.values())
    kept = settings.output_dir / "jobs" / "kept"  # moved aside: the next job cannot reuse them
    (settings.output_dir / "jobs" / str(eager)).rename(kept)
    lazy = json.loads(tumorlens("scan", scans, "--local", "--json", "--model", model,
                                "--method", "cam").stdout)["job"]
    # no overlay in the job's own folder, yet each record says where it will be drawn
    for record in json.loads(tumorlens("export", lazy).stdout):
        assert record["overlay"].endswith(".overlay.png") and not tmp_path.joinpath(record["overlay"]).exists()

    drawn = tumorlens("export", lazy, "--overlays", tmp_path / "drawn", "--processes", "2")
    records = json.loads(drawn.stdout)
    assert f"job {lazy}: 7 overlays drawn into {tmp_path / 'drawn'}" in drawn.stderr
    assert len(records) == 7 and {r["frame"] for r in records} == {None, 0, 1, 2}
    for record in records:
        assert record["overlay"].startswith(str(tmp_path / "drawn"))
        theirs = kept / Path(eager_records[record["path"], record["frame"]]["overlay"]).relative_to(
            settings.output_dir / "jobs" / str(eager))
        assert Path(record["overlay"]).read_bytes() == theirs.read_bytes()  # what --overlays eager wrote
    assert (tmp_path / "drawn" / "series.dcm.f0002.overlay.png").is_file()

    (scans / "yes" / "scan_1_000.jpg").unlink()
    (scans / "yes" / "scan_1_001.png").write_bytes((scans / "yes" / "scan_1_003.tif").read_bytes())
    again = tumorlens("export", lazy, "--overlays", tmp_path / "again")
    assert f"job {lazy}: 5 overlays drawn" in again.stderr
    assert "2 scans could not be drawn (their records say overlay null):" in again.stderr
    assert "yes/scan_1_000.jpg: the scan file cannot be read again (the file is gone" in again.stderr
    assert "yes/scan_1_001.png: the scan file has changed since it was analysed" in again.stderr
    overlays = {r["path"]: r["overlay"] for r in json.loads(again.stdout) if r["frame"] is None}
    assert overlays["yes/scan_1_000.jpg"] is None and overlays["yes/scan_1_001.png"] is None
    assert overlays["yes/scan_1_002.bmp"] == str(tmp_path / "again" / "yes" / "scan_1_002.bmp.overlay.png")
