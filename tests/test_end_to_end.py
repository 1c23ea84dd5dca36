"""Acceptance: analyse a folder on one machine with the real ``tumorlens`` command.

Tiny random-weight models from ``tests.builders.models``; real SQLite (and PostgreSQL where a
test compares the two); the CLI through click's CliRunner, or as a subprocess where a signal or
a fresh process matters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.builders.cli import export, scan_json, small_model, tumorlens
from tests.builders.models import build_model, class_names_for
from tests.builders.scans import PHI, make_dicom, synthetic_slice, write_bad_scans, write_good_scans
from tests.conftest import PROJECT_ROOT, empty_postgres
from worker.db import make_session_factory, session_scope
from worker.models import Job, JobStatus, Result, Scan, ScanStatus

MODEL_SHAPES = {  # id: (kind, output, color_mode, classes, input size)
    "xception-logits-4": ("nested_xception", "logits", "rgb", 4, (71, 71)),
    "sequential-softmax": ("sequential", "probabilities", "rgb", 2, (32, 32)),
    "separate-softmax": ("separate_softmax", "probabilities", "rgb", 2, (40, 32)),
    "sigmoid": ("functional", "sigmoid", "rgb", 2, (32, 32)),
    "grayscale": ("nested_small", "probabilities", "grayscale", 3, (36, 36)),
}


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.fixture(params=[pytest.param(k, marks=pytest.mark.slow) if "xception" in k else k
                        for k in MODEL_SHAPES])
def model_json(request, tmp_path_factory) -> tuple[Path, list[str]]:
    """A model.json for each head/architecture shape, and its class names."""
    kind, output, color, classes, size = MODEL_SHAPES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    path = build_model(folder, kind, input_size=size, classes=classes, output=output, color_mode=color)
    return path, class_names_for(classes)[0]


def test_every_model_shape_gives_a_done_record_with_overlay_and_peak(settings, tmp_path, model_json):
    path, class_names = model_json
    folder = tmp_path / "scans"
    write_good_scans(folder / "a", 2, size=(80, 60), seed=1)
    write_good_scans(folder / "b", 2, size=(50, 70), seed=2)
    make_dicom(folder / "b" / "slice.dcm", synthetic_slice(np.random.default_rng(3), (64, 48)))
    summary = scan_json(folder, "--model", path)
    assert {k: summary[k] for k in ("status", "scans", "done", "failed", "duplicate")} == {
        "status": "done", "scans": 5, "done": 5, "failed": 0, "duplicate": 0}
    drawn = tumorlens("export", summary["job"], "--overlays", tmp_path / "drawn")  # on demand
    records = json.loads(drawn.stdout)
    assert len(records) == 5 and "5 overlays drawn" in drawn.stderr
    for record in records:
        assert record["status"] == "done" and record["error"] is None
        expected = (64, 48) if record["path"].endswith(".dcm") else image_size(folder / record["path"])
        assert (record["width"], record["height"]) == expected
        assert image_size(Path(record["overlay"])) == expected
        assert Path(record["heatmap"]).is_file()
        assert 0 <= record["peak"][0] < record["width"] and 0 <= record["peak"][1] < record["height"]
        assert list(record["probabilities"]) == class_names
        assert record["predicted_class"] in class_names
        assert 0.0 <= record["tumor_probability"] <= 1.0


def test_bad_files_fail_in_words_and_good_ones_are_done(settings, tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    good = write_good_scans(folder, 4, size=(48, 48))
    corpus = write_bad_scans(folder / "bad")
    doomed = write_good_scans(folder / "late", 1, seed=7)[0]
    monkeypatch.setattr("worker.commands.scan.job_progress", _deleting_progress(doomed))
    result = tumorlens("scan", folder, "--local", "--json", "--model", small_model(tmp_path))
    summary = json.loads(result.stdout)
    records = {r["path"]: r for r in export(summary["job"])}
    expected_failures = {f"bad/{p.name}" for k, p in corpus.bad.items() if k != "directory"}
    expected_failures.add("late/" + doomed.name)
    failed = {path for path, r in records.items() if r["status"] == "failed"}
    assert failed == expected_failures
    for path in failed:
        error = records[path]["error"]
        assert error and len(error) > 15 and "Traceback" not in error and "Error(" not in error, path
    assert "gone" in records["late/" + doomed.name]["error"]  # deleted after the walk
    done = {path for path, r in records.items() if r["status"] == "done"}
    assert done == {p.name for p in good} | {f"bad/{p.name}" for p in corpus.good.values()}
    assert (summary["failed"], summary["done"]) == (len(failed), len(done))
    assert "bad/series.jpg" not in records  # a folder, walked into, not a scan


def _deleting_progress(path: Path):
    """A progress display that deletes ``path`` once the walk has recorded it."""
    import contextlib

    @contextlib.contextmanager
    def progress(job_id):
        def update(finished, total):
            if total and path.exists():
                path.unlink()
        yield update

    return progress


def test_webp_and_jpeg_2000_scans_are_found_and_done(settings, tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(synthetic_slice(rng, (48, 40))).save(folder / "slice.webp", lossless=True)
    Image.fromarray(synthetic_slice(rng, (52, 44))).save(folder / "slice.jp2", irreversible=False)
    summary = scan_json(folder, "--model", small_model(tmp_path))
    assert (summary["scans"], summary["done"]) == (2, 2)
    assert {(r["path"], r["width"], r["height"]) for r in export(summary["job"])} == {
        ("slice.webp", 48, 40), ("slice.jp2", 52, 44)}


def test_rerun_reuses_done_work_and_copies_are_duplicates(settings, tmp_path):
    folder = tmp_path / "scans"
    originals = write_good_scans(folder, 5, size=(40, 40))
    shutil.copyfile(originals[0], folder / "zz_same_bytes.jpg")
    model = small_model(tmp_path)
    first = scan_json(folder, "--model", model)
    assert (first["done"], first["duplicate"]) == (5, 1)
    write_good_scans(folder / "new", 1, seed=5)
    second = scan_json(folder, "--model", model)
    assert (second["scans"], second["done"], second["duplicate"]) == (7, 6, 1)
    factory = make_session_factory(str(settings.database_url))
    with session_scope(factory) as session:
        before, after = (_result_times(session, job["job"]) for job in (first, second))
    reused = {path for path, created in after.items() if before.get(path) == created}
    assert reused == set(before) and set(after) - reused == {"new/scan_5_000.jpg"}
    records = {r["path"]: r for r in export(second["job"])}
    assert records["zz_same_bytes.jpg"]["tumor_probability"] == records[originals[0].name]["tumor_probability"]


def _result_times(session, job_id: int) -> dict:
    """Return when each scan's result was computed (a copied result keeps its time)."""
    query = select(Scan.path, Result.created_at).join(Result).where(Scan.job_id == job_id)
    return dict(session.execute(query).all())


def test_errors_exit_non_zero_with_a_clear_message(settings, tmp_path):
    missing = tumorlens("scan", tmp_path / "nope", "--local", expect=1)
    assert "no such folder" in missing.output
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text('{"format": 1, "name": "x"}')
    invalid = tumorlens("scan", tmp_path, "--model", tmp_path / "m", expect=1)
    assert "invalid model" in invalid.output and '"file" is missing' in invalid.output
    unknown = tumorlens("scan", tmp_path, "--method", "magic", expect=2)
    assert "magic" in unknown.output and "gradcam" in unknown.output
    assert "no job 77" in tumorlens("export", "77", expect=1).output


def test_a_model_that_does_not_match_its_spec_fails_the_job_once_and_resumes_when_fixed(settings, tmp_path):
    model = small_model(tmp_path)
    spec = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**spec, "output": "sigmoid"}))  # it is softmax
    write_good_scans(tmp_path / "scans", 3, size=(40, 40))
    result = tumorlens("scan", tmp_path / "scans", "--local", "--model", model, expect=1)
    assert f"job 1 failed: the model {spec['name']} cannot be analysed" in result.output
    assert 'set "output" to "probabilities"' in result.output
    assert result.output.count("cannot be analysed") == 1  # told once, not once per scan
    assert not [r for r in export(1) if r["status"] == "failed"]  # no scan blamed for the model
    (model / "model.json").write_text(json.dumps(spec))  # the spec fixed: resume takes it
    resumed = json.loads(tumorlens("resume", "1", "--json").stdout)
    assert (resumed["status"], resumed["done"], resumed["failed"]) == ("done", 3, 0)


def test_default_model_falls_back_to_a_labelled_demo(settings_env, tmp_path, monkeypatch):
    missing = tmp_path / "no-default"  # stands for models/default before a trained model ships
    monkeypatch.setattr("worker.commands.scan.DEFAULT_MODEL", missing)
    settings = settings_env(model=missing)
    write_good_scans(tmp_path / "scans", 2, size=(40, 40))
    result = tumorlens("scan", tmp_path / "scans", "--local", "--json")
    assert "demo model with random weights" in result.stderr
    assert json.loads(result.stdout)["done"] == 2
    assert (settings.home / "demo-model" / "model.json").is_file()


def _subprocess_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORLENS_")}
    return {**env, "TUMORLENS_HOME": str(settings.home), "PYTHONPATH": str(PROJECT_ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def _cli(*args) -> list[str]:
    return [sys.executable, "-c", "from worker.cli import main; main(prog_name='tumorlens')",
            *map(str, args)]


@pytest.mark.slow
def test_ctrl_c_keeps_a_consistent_job_and_resume_finishes_it(settings, tmp_path):
    folder = tmp_path / "scans"
    write_good_scans(folder, 60, size=(384, 384))
    model = small_model(tmp_path)
    tumorlens("db", "upgrade")
    factory = make_session_factory(str(settings.database_url))
    proc = subprocess.Popen(_cli("scan", folder, "--local", "--model", model, "--batch-size", "2"),
                            env=_subprocess_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        _wait_for_done(factory, at_least=6, proc=proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert 'interrupted: run "tumorlens resume 1" to finish' in stderr
    with session_scope(factory) as session:
        assert session.get(Job, 1).status == JobStatus.RUNNING
        counts = dict(session.execute(select(Scan.status, func.count()).group_by(Scan.status)).all())
        assert counts.get(ScanStatus.PENDING, 0) > 0 and counts.get(ScanStatus.DONE, 0) >= 6
        assert _results_per_done_scan(session) == counts[ScanStatus.DONE]
    resumed = subprocess.run(_cli("resume", 1, "--json"), env=_subprocess_env(settings),
                             capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["done"] == 60
    with session_scope(factory) as session:
        assert _results_per_done_scan(session) == 60
        assert session.scalar(select(func.count()).select_from(Result)) == 60


def _wait_for_done(factory, at_least: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the scan ended before it could be interrupted: {proc.stderr.read()}"
        try:
            with session_scope(factory) as session:
                done = session.scalar(select(func.count()).where(Scan.status == ScanStatus.DONE))
        except Exception:  # the subprocess may still be creating the schema
            done = 0
        if done >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError("no scan was done in time")


def _results_per_done_scan(session) -> int:
    query = (select(func.count(func.distinct(Result.scan_id))).join(Scan)
             .where(Scan.status == ScanStatus.DONE))
    assert session.scalar(select(func.count()).select_from(Result)) == session.scalar(query)
    return session.scalar(query)


@pytest.mark.slow
def test_memory_stays_flat_over_many_batches(settings, tmp_path):
    import psutil

    from pipeline.model.spec import load_spec
    from worker.jobs import create_job
    from worker.local import run_local

    write_good_scans(tmp_path / "scans", 240, size=(384, 384))
    tumorlens("db", "upgrade")
    factory = make_session_factory(str(settings.database_url))

    with session_scope(factory) as session:
        job_id = create_job(session, tmp_path / "scans", load_spec(small_model(tmp_path)), "gradcam").id
    process, samples = psutil.Process(), {}

    def sample(finished, total):
        samples[finished] = process.memory_info().rss

    run_local(factory, job_id, batch_size=4, on_progress=sample)
    warm = samples[min(k for k in samples if k >= 20)]
    late = samples[max(samples)]
    assert max(samples) == 240
    # Keeping every upsampled heatmap (384 * 384 * 4 bytes) would add ~140 MB over 220 scans.
    assert late - warm < 40 * 2**20, f"RSS grew by {(late - warm) / 2**20:.0f} MB"


@pytest.fixture
def emptied_postgres(postgres_url):
    """The session's PostgreSQL store, emptied after the test like ``database_url`` does."""
    yield postgres_url
    empty_postgres(postgres_url)


@pytest.mark.postgres
def test_the_store_is_the_same_on_sqlite_and_postgresql(settings_env, emptied_postgres, tmp_path):
    folder = tmp_path / "scans"
    write_good_scans(folder / "YES", 3, size=(40, 40), seed=1)
    write_good_scans(folder / "NO", 3, size=(40, 40), seed=2)
    shutil.copyfile(folder / "YES" / "scan_1_000.jpg", folder / "NO" / "zz_copy.jpg")
    (folder / "NO" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    model = small_model(tmp_path)
    exports = []
    for url in (f"sqlite:///{tmp_path / 'one.db'}", emptied_postgres):
        settings_env(database_url=url, output_dir=tmp_path / "out" / str(len(exports)))
        tumorlens("db", "upgrade")
        summary = scan_json(folder, "--model", model, "--overlays", "eager")
        exports.append(export(summary["job"]))
        tumorlens("neurons", summary["job"], "--json")
    strip = ("overlay", "heatmap")
    one, two = ([{k: v for k, v in r.items() if k not in strip} for r in e] for e in exports)
    assert len(one) == 8 and one == two
    for a, b in zip(*exports):
        for key in strip:
            assert (a[key] is None) == (b[key] is None)
            if a[key]:
                assert Path(a[key]).read_bytes() == Path(b[key]).read_bytes()


def test_no_patient_identifier_reaches_the_store_outputs_or_export(settings, tmp_path):
    folder = tmp_path / "scans"
    pixels = synthetic_slice(np.random.default_rng(0), (64, 64))
    (folder / "study").mkdir(parents=True)
    make_dicom(folder / "study" / "slice.dcm", pixels, phi=True)
    make_dicom(folder / "study" / "series.dcm", np.stack([pixels, pixels[::-1]]), phi=True)
    summary = scan_json(folder, "--model", small_model(tmp_path))
    assert summary["done"] == 2
    exported = tumorlens("export", summary["job"], "--format", "csv").stdout
    exported += tumorlens("export", summary["job"], "--format", "json").stdout
    exported += tumorlens("neurons", summary["job"], "--json").stdout
    database = _dump_sqlite(Path(str(settings.database_url).removeprefix("sqlite:///")))
    outputs = b"".join(p.read_bytes() for p in settings.output_dir.rglob("*") if p.is_file())
    for value in _phi_strings():
        assert value not in exported and value not in database, value
        assert value.encode() not in outputs, value


def _phi_strings() -> list[str]:
    values = []
    for value in PHI.values():
        values += [value, *value.split("^")] if "^" in value else [value]
    return [v for v in values if len(v) >= 4]


def _dump_sqlite(path: Path) -> str:
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()
