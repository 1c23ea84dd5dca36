"""``export --format dicom``: per analysed series, Secondary Capture overlays a PACS files beside it.

The mixed archive of ``tests.builders.archives`` (two studies, nine series) plus two JPEGs is
scanned once per module with the small test model, through the command line, in a store of its
own; the overlays are drawn (``export --overlays``) and the DICOM export written; then one source
file is changed and one removed, and the DICOM export is written again into another folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from tests.builders.archives import WrittenArchive, write_archive
from tests.builders.cli import scan_json, small_model, tumorlens
from tests.builders.scans import PHI, write_good_scans
from tests.conftest import home_only
from tests.worker.test_series import planted_identifiers

ANALYSED = ("t1", "flair", "bare", "oblique", "enhanced")  # "few" is analysed, but its series is skipped
EXPORTS = ("json", "csv", "series", "series-csv")


@dataclass
class Run:
    written: WrittenArchive
    job: int
    records: dict[tuple[str, int | None], dict]  # the per-scan JSON export (with --overlays) by (path, frame)
    texts: dict[str, str]  # each record export's output
    dicom: Path
    said: str  # what the DICOM export printed
    again: Path  # the second DICOM export, one source changed and one gone
    said_again: str
    changed: str
    gone: str
    home: Path
    sources: dict[str, tuple[str, str, int | None]]  # source SOPInstanceUID -> (plan name, path, frame)
    headers: dict[str, pydicom.Dataset]  # each source file's header, read before any was changed


def source_instances(written: WrittenArchive, headers: dict) -> dict[str, tuple[str, str, int | None]]:
    found = {}
    for name, plan in written.series.items():
        for path, frame in plan.order:
            header = headers[path] = pydicom.dcmread(written.root / path, stop_before_pixels=True, force=True)
            found.setdefault(str(header.SOPInstanceUID), (name, path, None))
            if frame is not None:  # a multi-frame file: one instance for all its frames
                found[str(header.SOPInstanceUID)] = (name, path, "frames")
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    folder = tmp_path_factory.mktemp("dicom")
    written = write_archive(folder / "archive")
    write_good_scans(folder / "archive" / "photos", 2, size=(40, 40), seed=3)
    headers: dict[str, pydicom.Dataset] = {}
    sources = source_instances(written, headers)
    changed, gone = written.series["t1"].order[3][0], written.series["flair"].order[2][0]
    with home_only(folder / "home"):
        job = scan_json(written.root, "--model", small_model(folder))["job"]
        drawn = tumorlens("export", job, "--overlays", folder / "overlays", "--processes", "1").stdout
        texts = {fmt: tumorlens("export", job, "--format", fmt).stdout for fmt in EXPORTS}
        said = tumorlens("export", job, "--format", "dicom", "--out", folder / "dicom").stdout
        with open(written.root / changed, "ab") as handle:
            handle.write(b"\0\0")
        shutil.move(written.root / gone, folder / "moved-away")
        said_again = tumorlens("export", job, "--format", "dicom", "--out", folder / "again",
                               "--processes", "2").stdout
    records = {(r["path"], r["frame"]): r for r in json.loads(drawn)}
    return Run(written, job, records, texts, folder / "dicom", said, folder / "again", said_again, changed, gone,
               folder / "home", sources, headers)


def written_files(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.rglob("*.dcm"))]


def by_source_series(run: Run, folder: Path) -> dict[str, list[pydicom.Dataset]]:
    """Return the written images by the plan name of the series their source image belongs to."""
    found: dict[str, list] = {}
    for ds in written_files(folder):
        (reference,) = ds.ReferencedImageSequence
        found.setdefault(run.sources[str(reference.ReferencedSOPInstanceUID)][0], []).append(ds)
    return found


def source_of(run: Run, ds: pydicom.Dataset) -> tuple[str, str, int | None]:
    """Return (plan name, path, frame) of the source image one SC image references."""
    (reference,) = ds.ReferencedImageSequence
    name, path, kind = run.sources[str(reference.ReferencedSOPInstanceUID)]
    return name, path, None if kind is None else int(reference.ReferencedFrameNumber) - 1


def test_one_new_series_per_analysed_series_one_image_per_analysed_slice(run):
    found = by_source_series(run, run.dicom)
    assert sorted(found) == sorted(ANALYSED)  # skipped series (tags, too few slices) and JPEGs: none
    for name, images in found.items():
        plan = run.written.series[name]
        assert len(images) == len(plan.order), name
        assert len({str(ds.SeriesInstanceUID) for ds in images}) == 1
        assert str(images[0].SeriesInstanceUID) != plan.uid
        assert sorted(int(ds.InstanceNumber) for ds in images) == list(range(1, len(plan.order) + 1))
    assert len({str(images[0].SeriesInstanceUID) for images in found.values()}) == len(ANALYSED)
    assert "5 series, 31 Secondary Capture images written" in run.said and "0 slices skipped" in run.said


def test_each_image_is_an_rgb_secondary_capture_of_its_slices_overlay(run):
    for ds in written_files(run.dicom):
        name, path, frame = source_of(run, ds)
        assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.Modality == "OT"
        assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("RGB", 3, 8)
        record = run.records[(path, frame)]
        assert int(ds.InstanceNumber) == record["slice_index"] + 1  # the source's anatomical order
        overlay = np.asarray(Image.open(record["overlay"]).convert("RGB"))
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint8 and pixels.shape == overlay.shape == (record["height"], record["width"], 3)
        np.testing.assert_array_equal(pixels, overlay)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
        assert ds.SeriesDescription.startswith("tumorlens gradcam of ")


def test_the_enhanced_series_images_name_their_frames(run):
    images = by_source_series(run, run.dicom)["enhanced"]
    frames = sorted(int(ds.ReferencedImageSequence[0].ReferencedFrameNumber) for ds in images)
    assert frames == list(range(1, 7))
    order = run.written.series["enhanced"].order  # frame 5 lies lowest: instance 1
    assert {int(ds.InstanceNumber): source_of(run, ds)[2] for ds in images} == {
        rank + 1: frame for rank, (_, frame) in enumerate(order)}


def test_patient_and_study_come_from_the_source_and_references_are_real(run):
    for ds in written_files(run.dicom):
        name, path, _ = source_of(run, ds)
        source = run.headers[path]
        assert ds.StudyInstanceUID == source.StudyInstanceUID == run.written.study_uids[run.written.series[name].study]
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID",
                        "StudyDate", "StudyTime", "ReferringPhysicianName"):
            assert ds[keyword].value == source[keyword].value, keyword
        (reference,) = ds.ReferencedImageSequence
        assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (
            source.SOPClassUID, source.SOPInstanceUID)
        assert ds.SOPInstanceUID != source.SOPInstanceUID and ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_identifiers_are_in_this_export_only(run):
    planted = planted_identifiers(run.written)
    dicom = b"".join(path.read_bytes() for path in run.dicom.rglob("*.dcm"))
    assert PHI["PatientName"].encode() in dicom and PHI["PatientID"].encode() in dicom
    stored = b"".join(path.read_bytes() for path in run.home.glob("tumorlens.db*"))
    logs = b"".join(path.read_bytes() for path in run.home.rglob("*.log"))
    overlays = b"".join(p.read_bytes() for p in (run.dicom.parent / "overlays").rglob("*") if p.is_file())
    for value in planted:
        for where, data in {"store": stored, "logs": logs, "overlays": overlays}.items():
            assert value.lower().encode() not in data.lower(), (where, value)
        for text in (*run.texts.values(), run.said, run.said_again):
            assert value.lower() not in text.lower(), value


def test_a_changed_or_missing_source_is_told_per_slice_and_the_rest_is_written(run):
    found = by_source_series(run, run.again)
    assert sorted(found) == sorted(ANALYSED)
    sizes = {name: len(images) for name, images in found.items()}
    assert sizes == {name: len(run.written.series[name].order) - (name in ("t1", "flair")) for name in ANALYSED}
    told = [line.strip() for line in run.said_again.splitlines() if line.strip().startswith("skipped ")]
    assert len(told) == 2 and "2 slices skipped" in run.said_again
    assert any(line.startswith(f"skipped {run.changed}:") and "SHA-256" in line for line in told)
    assert any(line.startswith(f"skipped {run.gone}:") and "cannot be read again" in line for line in told)
    assert {source_of(run, ds)[1] for images in found.values() for ds in images}.isdisjoint({run.changed, run.gone})


def test_dciodvfy_finds_no_error(run):
    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed: apt-get install dicom3tools")
    for images in by_source_series(run, run.dicom).values():  # "bare" has no BodyPartExamined
        for ds in images[:2]:
            path = Path(ds.filename)
            checked = subprocess.run([binary, "-new", str(path)], capture_output=True, text=True, timeout=60)
            errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
            assert not errors, (path, errors)


def test_the_dicom_export_needs_an_out_folder_and_says_it_identifies(settings, tmp_path):
    refused = tumorlens("export", 1, "--format", "dicom", expect=2)
    assert "--format dicom writes files that identify the patient: it needs --out DIR" in refused.output
    assert "needs --out DIR" in tumorlens("export", 1, "--out", tmp_path / "d", expect=2).output
    assert "--overlays" in tumorlens("export", 1, "--format", "dicom", "--out", tmp_path / "d",
                                     "--overlays", tmp_path / "o", expect=2).output
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()
    assert "there is no job 42" in tumorlens("export", 42, "--format", "dicom", "--out", tmp_path / "d",
                                             expect=1).output
    shown = " ".join(tumorlens("export", "--help").output.split())
    assert "THIS EXPORT CARRIES PATIENT IDENTIFIERS" in shown


@pytest.mark.parametrize("orientation, expected", [
    ([1, 0, 0, 0, 1, 0], ("L", "P")), ([1, 0, 0, 0, 0, -1], ("L", "F")), ([0, 1, 0, 0, 0, -1], ("P", "F")),
    ([-1, 0, 0, 0, -1, 0], ("R", "A")), (None, None)])
def test_patient_orientation_names_where_rows_and_columns_run(orientation, expected):
    from worker.dicom_export import patient_orientation

    assert patient_orientation(None if orientation is None else tuple(orientation)) == expected


def test_a_warning_that_would_quote_the_patients_name_is_kept_in(tmp_path):
    import warnings

    from tests.builders.scans import make_dicom
    from worker.dicom_export import SliceTask, SourceFile, sc_image

    path = make_dicom(tmp_path / "one.dcm", np.zeros((4, 4), np.uint16), extra={"PatientName": "DOEONLY"})
    header = pydicom.dcmread(path, stop_before_pixels=True)
    task = SourceFile("one.dcm", str(path), None, pydicom.uid.generate_uid(), 9001, "gradcam", "small")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = sc_image(header, np.zeros((4, 4, 3), np.uint8), task, SliceTask(0, False, "", 1, ""))
    assert str(image.PatientName) == "DOEONLY"
    assert not [w for w in caught if "DOEONLY" in str(w.message)]


def test_a_job_not_yet_done_has_no_dicom_export(store_settings, session_factory, tmp_path):
    from pipeline.model.spec import load_spec
    from worker import jobs
    from worker.db import session_scope

    written = write_archive(tmp_path / "archive")
    with session_scope(session_factory) as session:
        job = jobs.create_job(session, written.root, load_spec(small_model(tmp_path) / "model.json"), "gradcam").id
    refused = tumorlens("export", job, "--format", "dicom", "--out", tmp_path / "d", expect=1)
    assert f"job {job} is pending: its DICOM export can be made when it is done" in refused.output
    assert not (tmp_path / "d").exists()
