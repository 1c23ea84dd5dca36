"""DICOM series in a job: skipped series and their reasons, slice order, the series export, the
whole-series rules (too few slices, images outside the model's experience) and that no patient
identifier planted in the headers reaches the store or an export.

A mixed archive (``tests.builders.archives``: two studies, nine series of every awkward kind,
files without a suffix in nested folders, non-DICOM files) plus two JPEGs is scanned once per
module with the small test model, through the command line, in a store of its own.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select, update

from pipeline.io.series import uid_key
from tests.builders.archives import WrittenArchive, write_archive
from tests.builders.cli import scan_json, small_model, tumorlens
from tests.builders.scans import PHI, write_good_scans
from tests.conftest import home_only
from worker import jobs
from worker.db import session_scope
from worker.models import Result, Scan
from worker.series_export import series_rows
from worker.settings import dicom_uid_key

EXPORTS = ("json", "csv", "series", "series-csv")
TAG_SKIPPED = {"knee": "skipped: not a brain series (BodyPartExamined KNEE)",
               "ct": "skipped: not MR (Modality CT)",
               "localizer": "skipped: a localizer (ImageType LOCALIZER)"}
ANALYSED = ("t1", "flair", "bare", "oblique", "enhanced")
THRESHOLD = 0.5  # the small model's spec sets none


@dataclass
class Run:
    written: WrittenArchive
    summary: dict
    scans: dict[tuple[str, int | None], dict]  # the per-scan JSON export by (path, frame)
    series: dict[str, dict]  # the series export by the plan's name
    series_list: list[dict]
    texts: dict[str, str]  # each export format's output
    home: Path
    key: bytes  # the installation's UID key


def run_archive(folder: Path, *options: str) -> Run:
    """Scan the mixed archive plus two JPEGs in-process in a store under ``folder``; export it all."""
    written = write_archive(folder / "archive")
    write_good_scans(folder / "archive" / "photos", 2, size=(40, 40), seed=3)
    with home_only(folder / "home"):
        summary = scan_json(written.root, "--model", small_model(folder), *options)
        texts = {fmt: tumorlens("export", summary["job"], "--format", fmt).stdout for fmt in EXPORTS}
        key = dicom_uid_key()
    names = {uid_key(plan.uid, key): name for name, plan in written.series.items()}
    series_list = json.loads(texts["series"])
    return Run(written, summary, {(r["path"], r["frame"]): r for r in json.loads(texts["json"])},
               {names[r["series_key"]]: r for r in series_list}, series_list, texts, folder / "home", key)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return run_archive(tmp_path_factory.mktemp("series"))


def slice_records(run: Run, name: str) -> list[dict]:
    """Return the per-scan records of a planned series, in the plan's anatomical order."""
    return [run.scans[(path, frame)] for path, frame in run.written.series[name].order]


def test_the_job_counts_series_and_the_scans_of_skipped_series(run):
    planned = {name: len(plan.order) for name, plan in run.written.series.items()}
    assert run.summary["status"] == "done" and run.summary["series"] == len(planned) == 9
    assert run.summary["skipped"] == sum(planned[name] for name in TAG_SKIPPED) == 15
    # damaged.dcm fails; every other walked file is a slice of a series or one of the JPEGs
    assert run.summary["failed"] == 1
    assert run.summary["scans"] == sum(planned.values()) - planned["enhanced"] + 1 + 2 + 1


@pytest.mark.parametrize("name", sorted(TAG_SKIPPED))
def test_a_series_ruled_out_by_its_tags_is_skipped_with_the_reason_and_never_analysed(run, name):
    for record in slice_records(run, name):
        assert (record["status"], record["error"]) == ("skipped", TAG_SKIPPED[name])
        assert record["tumor_probability"] is None and record["heatmap"] is None
        assert record["series"] == run.series[name]["series_key"]
    described = run.series[name]
    assert (described["analysed"], described["reason"], described["analysed_slices"]) == (
        False, TAG_SKIPPED[name], 0)
    assert described["tumor_probability"] is None and described["tumor_slices"] is None


@pytest.mark.parametrize("name", [n for n in ("t1", "flair", "bare", "knee", "oblique", "ct", "few", "enhanced")])
def test_every_slice_gets_its_place_in_the_anatomical_order(run, name):
    records = slice_records(run, name)  # the plan's order, never the reader's own
    assert [r["slice_index"] for r in records] == list(range(len(records)))
    assert {r["series"] for r in records} == {run.series[name]["series_key"]}
    assert run.series[name]["slice_count"] == len(records)


def test_a_preamble_less_file_without_a_suffix_is_a_slice_too(run):
    stripped = [path for path, _ in run.written.series["bare"].order
                if (run.written.root / path).read_bytes()[128:132] != b"DICM"]
    assert len(stripped) == 1 and run.scans[(stripped[0], None)]["status"] == "done"


@pytest.mark.parametrize("name, expected", [
    ("t1", {"number": 3, "modality": "MR", "body_part": "HEAD", "description": "AX SE", "orientation": "axial",
            "slice_count": 7, "spacing_mm": 5.0, "spacing_from": "positions", "sequence": "T1",
            "sequence_because": "RepetitionTime 500 ms, EchoTime 12 ms → T1"}),
    ("flair", {"description": "AX FLAIR", "spacing_mm": 6.0, "sequence": "FLAIR"}),
    ("bare", {"orientation": "unknown", "spacing_mm": 5.0, "spacing_from": "SliceThickness", "sequence": "T2"}),
    ("localizer", {"orientation": "mixed", "slice_count": 3, "image_type": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}),
    ("enhanced", {"number": 9, "slice_count": 6, "spacing_mm": 3.0, "spacing_from": "positions",
                  "sequence": "T1", "image_type": ["ORIGINAL", "PRIMARY"]}),
])
def test_the_series_export_describes_each_series(run, name, expected):
    described = run.series[name]
    assert {key: described[key] for key in expected} == expected
    assert described["study_key"] == uid_key(run.written.study_uids[run.written.series[name].study], run.key)


def test_series_come_by_study_and_series_number(run):
    studies = [r["study_key"] for r in run.series_list]
    assert len(set(studies)) == 2 and studies == sorted(studies, key=studies.index)  # contiguous
    for study in set(studies):
        numbers = [r["number"] for r in run.series_list if r["study_key"] == study]
        assert numbers == sorted(numbers)


def test_too_few_slices_leaves_a_series_without_a_result_and_says_its_slices_were_analysed(run):
    described = run.series["few"]
    assert described["analysed"] is False
    assert described["reason"].startswith("skipped: too few slices (2 < 5); its 2 analysed slices")
    assert described["tumor_probability"] is None and described["strongest_slice"] is None
    assert {r["status"] for r in slice_records(run, "few")} == {"done"}


def runs_at(values: list[float], threshold: float) -> list[list[int]]:
    runs, start = [], None
    for index, value in enumerate([*values, -1.0]):
        if value >= threshold and start is None:
            start = index
        elif value < threshold and start is not None:
            runs.append([start, index - 1])
            start = None
    return runs


@pytest.mark.parametrize("name", ANALYSED)
def test_a_series_result_is_the_mean_of_its_three_strongest_slices(run, name):
    records = slice_records(run, name)
    values = [r["tumor_probability"] for r in records]
    described = run.series[name]
    assert described["analysed"] is True and described["reason"] is None
    assert (described["aggregation"], described["k"], described["threshold"]) == ("top-k-mean", 3, THRESHOLD)
    assert described["tumor_probability"] == pytest.approx(sum(sorted(values)[-3:]) / 3)
    assert described["tumor"] is (described["tumor_probability"] >= THRESHOLD)
    assert described["tumor_slices"] == runs_at(values, THRESHOLD)
    strongest = values.index(max(values))
    path, frame = run.written.series[name].order[strongest]
    assert described["strongest_slice"] == {"index": strongest, "path": path, "frame": frame}
    assert (described["analysed_slices"], described["ood_slices"]) == (len(values), 0)


def test_scans_of_no_series_are_as_before(run):
    photos = [r for (path, _), r in run.scans.items() if path.startswith("photos/")]
    assert len(photos) == 2 and all(r["status"] == "done" for r in photos)
    assert all(r["series"] is None and r["slice_index"] is None for r in photos)
    damaged = run.scans[("DICOM/0001/damaged.dcm", None)]
    assert damaged["status"] == "failed" and damaged["error"] and damaged["series"] is None
    assert not {"README", "DICOM/0002/notes.txt", "export/x/junk"} & {path for path, _ in run.scans}


def test_the_csv_exports_carry_the_same_series_fields(run):
    per_scan = list(csv.DictReader(io.StringIO(run.texts["csv"])))
    by_path = {(r["path"], r["frame"] or None): r for r in per_scan}
    for (path, frame), record in run.scans.items():
        row = by_path[(path, None if frame is None else str(frame))]
        assert (row["series"] or None, row["slice_index"] or None) == (
            record["series"], None if record["slice_index"] is None else str(record["slice_index"]))
    flat = {r["series_key"]: r for r in csv.DictReader(io.StringIO(run.texts["series-csv"]))}
    assert len(flat) == len(run.series_list)
    for record in run.series_list:
        row = flat[record["series_key"]]
        assert row["tumor_slices"] == ";".join(f"{a}-{b}" for a, b in record["tumor_slices"] or ())
        assert row["analysed"] == ("true" if record["analysed"] else "false")
        assert row["strongest_slice_path"] == ((record["strongest_slice"] or {}).get("path") or "")
        assert row["image_type"] == "\\".join(record["image_type"] or ())


def planted_identifiers(written: WrittenArchive) -> list[str]:
    """Return the identifiers the archive's headers hold: PHI values and every raw UID."""
    values = {PHI[k] for k in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs",
                               "AccessionNumber")}
    values |= set(PHI["PatientName"].split("^")) | {"20240117"}  # the FLAIR's description holds a date
    values |= set(written.study_uids.values()) | {plan.uid for plan in written.series.values()}
    for name, plan in written.series.items():
        for path, _ in plan.order[:1]:
            header = pydicom.dcmread(written.root / path, stop_before_pixels=True, force=True)
            values.add(str(header.SOPInstanceUID))
    return sorted(values)


def test_no_identifier_reaches_the_store_or_an_export(run):
    planted = planted_identifiers(run.written)
    source = b"".join((run.written.root / path).read_bytes() for path, _ in run.written.series["t1"].order)
    assert all(value.encode() in source for value in PHI.values() if value in planted)  # really planted
    stored = b"".join(path.read_bytes() for path in run.home.glob("tumorlens.db*"))
    assert run.series["t1"]["series_key"].encode() in stored  # the right store, series recorded
    for value in planted:
        assert value.encode() not in stored, value
        assert value.lower().encode() not in stored.lower(), value
        for fmt, text in run.texts.items():
            assert value.lower() not in text.lower(), (fmt, value)


def test_all_series_analyses_every_series(tmp_path):
    run = run_archive(tmp_path, "--all-series")
    assert run.summary["skipped"] == 0
    for name in [*TAG_SKIPPED, "few"]:
        described = run.series[name]
        assert described["analysed"] is True and described["reason"] is None, name
        assert described["tumor_probability"] is not None
        assert {r["status"] for r in slice_records(run, name)} == {"done"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from pipeline.model.spec import load_spec

    return load_spec(small_model(tmp_path_factory.mktemp("model")) / "model.json")


def test_images_outside_the_models_experience_count_as_no_tumor_and_can_skip_a_series(
        settings, session_factory, spec, tmp_path):  # settings first: it drops the cached engines
    from pipeline.explain.analysis import Analyzer

    written = write_archive(tmp_path / "archive")
    with session_scope(session_factory) as session:
        job_id = jobs.create_job(session, written.root, spec, "gradcam").id
    for ids in jobs.enumerate_job(session_factory, job_id):
        jobs.process_batch(session_factory, Analyzer(spec, "gradcam"), job_id, ids, tmp_path / "out")
    flair, t1 = (written.series[name].order for name in ("flair", "t1"))
    with session_scope(session_factory) as session:
        ids = dict(session.execute(select(Scan.path, Scan.id).where(Scan.job_id == job_id)).all())

        def change(paths, **values):
            session.execute(update(Result).where(Result.scan_id.in_([ids[p] for p, _ in paths])).values(**values))

        change(flair, tumor_probability=0.99)  # tumor on every slice, were they brain images
        change(flair[:4], ood_score=3.0)
        change(t1, tumor_probability=0.2)
        change(t1[2:3], tumor_probability=0.99, ood_score=1.5)  # strong, but outside: no evidence
        change(t1[5:7], tumor_probability=0.8, ood_score=0.9)  # inside the model's experience
    assert jobs.finalize_job(session_factory, job_id)
    with session_scope(session_factory) as session:
        rows = {r["series_key"]: r for r in series_rows(session, job_id)}
    key = dicom_uid_key()
    skipped, kept = (rows[uid_key(written.series[name].uid, key)] for name in ("flair", "t1"))
    assert skipped["analysed"] is False
    assert skipped["reason"] == ("skipped: not a brain series by its images (4 of 6 slices outside the "
                                 "model's experience)")
    assert skipped["tumor"] is None and skipped["tumor_slices"] is None and skipped["tumor_probability"] is None
    assert (kept["analysed"], kept["ood_slices"], kept["analysed_slices"]) == (True, 1, 7)
    assert kept["tumor_probability"] == pytest.approx((0.8 + 0.8 + 0.2) / 3)
    assert kept["strongest_slice"]["index"] == 5 and kept["tumor_slices"] == [[5, 6]]


def test_the_uid_key_is_derived_from_the_installations_secret(settings_env):
    import hashlib
    import hmac

    from worker.settings import UID_KEY_LABEL

    first = dicom_uid_key(settings_env(secret_key="one installation's secret"))
    assert first == dicom_uid_key(settings_env(secret_key="one installation's secret"))  # stable
    assert first != dicom_uid_key(settings_env(secret_key="another installation's secret"))
    assert len(first) == 32 and b"secret" not in first
    assert first == hmac.new(b"one installation's secret", UID_KEY_LABEL, hashlib.sha256).digest()
    uid = "1.2.840.113619.2.55.3.604688119"
    assert uid_key(uid, first) != uid_key(uid, dicom_uid_key(settings_env()))  # the dev default differs


def test_the_series_export_of_a_missing_job_or_with_overlays_says_what_is_wrong(settings, tmp_path):
    assert "there is no job 42" in tumorlens("export", 42, "--format", "series", expect=1).output
    refused = tumorlens("export", 42, "--format", "series-csv", "--overlays", tmp_path / "o", expect=2)
    assert "--overlays draws per-scan overlays" in refused.output
    assert not (tmp_path / "o").exists()
    assert "--all-series" in tumorlens("scan", "--help").output
