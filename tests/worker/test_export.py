"""Export records: ARCHITECTURE's fields, duplicates, failures, frames, CSV flattening, streaming."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import select

from tests.worker.test_store import make_job
from worker import export
from worker.db import session_scope
from worker.models import Job, Result, Scan, ScanStatus, Series
from worker.store import NotFound

CLASSES = ["no_tumor", "tumor"]


def result(scan: Scan, frame: int = 0, p: float = 0.9, ood: float | None = None) -> Result:
    return Result(scan_id=scan.id, job_id=scan.job_id, frame=frame, width=630, height=600,
                  predicted_class="tumor" if p >= 0.5 else "no_tumor", tumor_probability=p,
                  probabilities={"no_tumor": round(1 - p, 6), "tumor": p}, method="gradcam",
                  peak_x=412, peak_y=188, overlay=f"jobs/1/{scan.path}.overlay.png",
                  thumbnail=f"jobs/1/{scan.path}.thumb.jpg", heatmap=f"jobs/1/{scan.path}.heatmap.npz", ood_score=ood)


@pytest.fixture
def job_id(session_factory) -> int:
    """A job with a done image, its duplicate, a failed file and a two-frame DICOM."""
    with session_scope(session_factory) as session:
        job = make_job(session)
        job.model.spec = {"class_names": CLASSES, "positive_classes": ["tumor"]}
        done = Scan(job_id=job.id, path="sub/dir/y12.jpg", sha256="a" * 64, status=ScanStatus.DONE)
        session.add(done)
        session.flush()
        copy = Scan(job_id=job.id, path="sub/dir/y12 copy.jpg", sha256="a" * 64,
                    status=ScanStatus.DUPLICATE, duplicate_of_id=done.id)
        failed = Scan(job_id=job.id, path="bad.png", sha256="b" * 64, status=ScanStatus.FAILED,
                      error="truncated PNG: the file ends before the image data")
        series = Scan(job_id=job.id, path="series.dcm", sha256="c" * 64, status=ScanStatus.DONE,
                      frames=2)
        session.add_all([copy, failed, series])
        session.flush()
        session.add_all([result(done), result(series, 1, 0.2), result(series, 0, 0.3)])
        return job.id


def rows(session_factory, job_id: int, out="/srv/out") -> list[dict]:
    with session_scope(session_factory) as session:
        return list(export.export_rows(session, job_id, out))


def test_records_have_exactly_the_architecture_fields(session_factory, job_id):
    records = rows(session_factory, job_id)
    assert [tuple(r) for r in records] == [export.FIELDS] * 5
    assert records[0] == {
        "path": "sub/dir/y12.jpg", "frame": None, "sha256": "a" * 64, "status": "done", "error": None,
        "width": 630, "height": 600, "predicted_class": "tumor", "tumor_probability": 0.9,
        "probabilities": {"no_tumor": 0.1, "tumor": 0.9}, "method": "gradcam", "peak": [412, 188],
        "overlay": "/srv/out/jobs/1/sub/dir/y12.jpg.overlay.png",
        "heatmap": "/srv/out/jobs/1/sub/dir/y12.jpg.heatmap.npz", "threshold": 0.5,
        "ood_score": None, "out_of_distribution": None, "series": None, "slice_index": None}


def test_slices_of_a_series_name_it_and_their_place_and_skipped_scans_say_why(session_factory, job_id):
    with session_scope(session_factory) as session:
        series = Series(job_id=job_id, key="k" * 64, study_key="s" * 64, analysed=False,
                        reason="skipped: not MR (Modality CT)")
        session.add(series)
        session.flush()
        multi = session.scalar(select(Scan).where(Scan.path == "series.dcm"))
        multi.series_id, multi.slice_index, multi.frame_slices = series.id, 3, [4, 3]  # stored top down
        session.add(Scan(job_id=job_id, path="ct/1", sha256="d" * 64, status=ScanStatus.SKIPPED,
                         error=series.reason, series_id=series.id, slice_index=0))
    records = rows(session_factory, job_id)
    assert [(r["path"], r["frame"], r["series"], r["slice_index"]) for r in records[3:]] == [
        ("series.dcm", 0, "k" * 64, 4), ("series.dcm", 1, "k" * 64, 3), ("ct/1", None, "k" * 64, 0)]
    skipped = records[-1]
    assert (skipped["status"], skipped["error"]) == ("skipped", "skipped: not MR (Modality CT)")
    assert all(skipped[field] is None for field in export.FIELDS[5:-2])


def test_records_carry_the_models_operating_point(session_factory, job_id):
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        job.model.spec = {**job.model.spec, "threshold": 0.31}
    assert [r["threshold"] for r in rows(session_factory, job_id)] == [0.31, 0.31, None, 0.31, 0.31]


def test_duplicates_carry_the_original_results_and_failures_carry_only_the_reason(
        session_factory, job_id):
    copy, failed = rows(session_factory, job_id)[1:3]
    assert copy["status"] == "duplicate" and copy["tumor_probability"] == 0.9
    assert copy["overlay"].endswith("y12.jpg.overlay.png")
    assert failed["status"] == "failed" and failed["error"].startswith("truncated PNG")
    assert all(failed[field] is None for field in export.FIELDS[5:])


def test_multi_frame_scans_give_one_record_per_frame_in_order(session_factory, job_id):
    frames = rows(session_factory, job_id)[3:]
    assert [(r["path"], r["frame"], r["tumor_probability"]) for r in frames] == [
        ("series.dcm", 0, 0.3), ("series.dcm", 1, 0.2)]


def test_scans_outside_the_models_experience_are_flagged(session_factory, job_id):
    with session_scope(session_factory) as session:
        scores = {"sub/dir/y12.jpg": 1.7, "series.dcm": 0.4}
        for res in session.query(Result).join(Scan).filter(Scan.path.in_(scores)):
            res.ood_score = scores[res.scan.path] if res.frame == 0 else None
        odd = Scan(job_id=job_id, path="odd.png", sha256="e" * 64, status=ScanStatus.DONE)
        session.add(odd)
        session.flush()
        session.add(result(odd, ood=1.23456789))
    records = rows(session_factory, job_id)
    assert [(r["path"], r["frame"], r["ood_score"], r["out_of_distribution"]) for r in records] == [
        ("sub/dir/y12.jpg", None, 1.7, True),
        ("sub/dir/y12 copy.jpg", None, 1.7, True),  # a duplicate carries its original's score
        ("bad.png", None, None, None),  # a failure has no result field
        ("series.dcm", 0, 0.4, False),
        ("series.dcm", 1, None, None),  # not measured
        ("odd.png", None, 1.235, True)]  # rounded


def test_csv_writes_the_flag_as_json_does(session_factory, job_id):
    with session_scope(session_factory) as session:
        for res in session.query(Result).join(Scan).filter(Scan.path == "series.dcm"):
            res.ood_score = 1.7 if res.frame == 0 else 0.4
    out = io.StringIO()
    with session_scope(session_factory) as session:
        export.export_job(session, job_id, "/o", "csv", out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["path"], r["ood_score"], r["out_of_distribution"]) for r in table] == [
        ("sub/dir/y12.jpg", "", ""), ("sub/dir/y12 copy.jpg", "", ""), ("bad.png", "", ""),
        ("series.dcm", "1.7", "true"), ("series.dcm", "0.4", "false")]


@pytest.mark.parametrize("score, flag", [(1.7, True), (0.4, False), (None, None), (1.0, False)])
def test_out_of_distribution_means_above_the_limit(score, flag):
    assert export.is_out_of_distribution(score) is flag


def test_json_is_one_array(session_factory, job_id):
    out = io.StringIO()
    with session_scope(session_factory) as session:
        assert export.export_job(session, job_id, "/o", "json", out) == 5
    parsed = json.loads(out.getvalue())
    assert parsed == rows(session_factory, job_id, "/o")


def test_csv_flattens_probabilities_and_peak(session_factory, job_id):
    out = io.StringIO()
    with session_scope(session_factory) as session:
        export.export_job(session, job_id, "/o", "csv", out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(table[0]) == ["path", "frame", "sha256", "status", "error", "width", "height",
                              "predicted_class", "tumor_probability", "prob_no_tumor", "prob_tumor",
                              "method", "peak_x", "peak_y", "overlay", "heatmap", "threshold",
                              "ood_score", "out_of_distribution", "series", "slice_index"]
    assert (table[0]["prob_tumor"], table[0]["peak_x"], table[0]["peak_y"]) == ("0.9", "412", "188")
    assert table[2]["status"] == "failed" and table[2]["prob_tumor"] == ""


def test_csv_cells_that_a_spreadsheet_would_run_are_kept_as_text(session_factory, job_id):
    with session_scope(session_factory) as session:
        session.add(Scan(job_id=job_id, path="=HYPERLINK(1)/@cmd.png", sha256="d" * 64,
                         status=ScanStatus.FAILED, error="-not a scan"))
    csv_out, json_out = io.StringIO(), io.StringIO()
    with session_scope(session_factory) as session:
        export.export_job(session, job_id, "/o", "csv", csv_out)
        export.export_job(session, job_id, "/o", "json", json_out)
    table = list(csv.DictReader(io.StringIO(csv_out.getvalue())))
    hostile = next(row for row in table if row["sha256"] == "d" * 64)
    assert (hostile["path"], hostile["error"]) == ("'=HYPERLINK(1)/@cmd.png", "'-not a scan")
    assert table[0]["path"] == "sub/dir/y12.jpg"  # ordinary text is untouched
    records = json.loads(json_out.getvalue())
    assert any(r["path"] == "=HYPERLINK(1)/@cmd.png" and r["error"] == "-not a scan" for r in records)


def test_an_empty_job_exports_an_empty_array_and_a_missing_one_says_so(session_factory):
    with session_scope(session_factory) as session:
        empty = make_job(session).id
    out = io.StringIO()
    with session_scope(session_factory) as session:
        export.export_job(session, empty, "/o", "json", out)
        assert json.loads(out.getvalue()) == []
        with pytest.raises(NotFound, match="no job 999"):
            export.export_job(session, 999, "/o", "json", io.StringIO())


def test_rows_are_streamed_not_kept(session_factory, job_id, monkeypatch):
    monkeypatch.setattr(export, "STREAM_ROWS", 2)
    held = []
    with session_scope(session_factory) as session:
        for _ in export.export_rows(session, job_id, "/o"):
            held.append(sum(isinstance(obj, Result) for obj in session.identity_map.values()))
    assert len(held) == 5 and max(held) <= 2
