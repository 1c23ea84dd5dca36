"""Job functions on real stores with a tiny real model: walk, batches, idempotence, finalising."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.builders.models import build_model
from tests.builders.scans import write_good_scans
from worker import jobs
from worker.db import session_scope
from worker.models import Job, JobStatus, NeuronPartial, NeuronStats, Result, Scan, ScanStatus
from worker.store import job_summary


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """A tiny random-weight CNN (32 px input) and its spec."""
    from pipeline.model.spec import load_spec

    return load_spec(build_model(tmp_path_factory.mktemp("model"), "sequential", input_size=(32, 32)))


@pytest.fixture(scope="module")
def analyzer(spec):
    from pipeline.explain.analysis import Analyzer

    return Analyzer(spec, "gradcam")


@pytest.fixture
def folder(tmp_path) -> Path:
    """YES/NO folders with three scans each, one byte-identical copy, one broken file."""
    root = tmp_path / "scans"
    write_good_scans(root / "yes", 3, seed=1)
    write_good_scans(root / "NO", 3, seed=2)
    shutil.copyfile(root / "yes" / "scan_1_000.jpg", root / "yes" / "zz_copy.jpg")
    (root / "NO" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def new_job(session_factory, root: Path, spec, method: str = "gradcam",
            overlays: str = "on-demand") -> int:
    with session_scope(session_factory) as session:
        return jobs.create_job(session, root, spec, method, overlays=overlays).id


def enumerate_all(session_factory, job_id: int, chunk_size: int = 500) -> list[int]:
    return [i for chunk in jobs.enumerate_job(session_factory, job_id, chunk_size) for i in chunk]


def process_all(session_factory, analyzer, job_id: int, output_dir: Path, size: int = 4) -> list:
    with session_scope(session_factory) as session:
        chunks = list(jobs.pending_scan_ids(session, job_id, size))
    return [jobs.process_batch(session_factory, analyzer, job_id, ids, output_dir) for ids in chunks]


def scans_by_path(session_factory, job_id: int) -> dict[str, Scan]:
    with session_scope(session_factory) as session:
        return {s.path: s for s in session.scalars(select(Scan).where(Scan.job_id == job_id))}


def test_create_job_refuses_a_missing_folder_and_an_unknown_method(session_factory, spec, tmp_path):
    with session_scope(session_factory) as session:
        with pytest.raises(jobs.JobError, match="no such folder"):
            jobs.create_job(session, tmp_path / "nope", spec, "gradcam")
        with pytest.raises(jobs.JobError, match="unknown method 'magic'.*gradcam"):
            jobs.create_job(session, tmp_path, spec, "magic")
        first = jobs.create_job(session, tmp_path, spec, "gradcam")
        second = jobs.create_job(session, tmp_path, spec, "cam")
        assert first.model_id == second.model_id  # one Model row per digest


def test_enumeration_records_labels_duplicates_and_failures_in_chunks(session_factory, spec, folder):
    job_id = new_job(session_factory, folder, spec)
    chunks = list(jobs.enumerate_job(session_factory, job_id, chunk_size=3))
    # Walk order: NO/broken.png, NO/scan_2_00[0-2], yes/scan_1_00[0-2], yes/zz_copy.jpg.
    assert [len(c) for c in chunks] == [3, 3, 1]  # the copy is recorded but not pending
    scans = scans_by_path(session_factory, job_id)
    assert scans["yes/zz_copy.jpg"].status == ScanStatus.DUPLICATE
    assert scans["yes/zz_copy.jpg"].duplicate_of_id == scans["yes/scan_1_000.jpg"].id
    assert scans["yes/scan_1_001.png"].label == 1 and scans["NO/scan_2_000.jpg"].label == 0
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert (job.status, job.label_source) == (JobStatus.RUNNING, "folder")
    assert sorted(i for c in chunks for i in c) == sorted(
        s.id for s in scans.values() if s.status == ScanStatus.PENDING)


def test_enumeration_is_idempotent_and_hashes_only_new_files(session_factory, spec, folder):
    job_id = new_job(session_factory, folder, spec)
    first = enumerate_all(session_factory, job_id)
    with session_scope(session_factory) as session:
        jobs.cancel_job(session, job_id)
        jobs.reopen_job(session, job_id)
    before = scans_by_path(session_factory, job_id)
    write_good_scans(folder / "yes" / "later", 1, seed=9)
    (folder / "NO" / "scan_2_000.jpg").write_bytes(b"changed after it was recorded")
    again = enumerate_all(session_factory, job_id)
    scans = scans_by_path(session_factory, job_id)
    assert len(scans) == 9 and again == [scans["yes/later/scan_9_000.jpg"].id]
    assert not set(first) & set(again)
    assert scans["NO/scan_2_000.jpg"].sha256 == before["NO/scan_2_000.jpg"].sha256  # not re-read


def test_a_folder_without_yes_no_takes_labels_from_predictions(session_factory, spec, tmp_path):
    write_good_scans(tmp_path / "patients" / "p1", 2)
    job_id = new_job(session_factory, tmp_path, spec)
    enumerate_all(session_factory, job_id)
    with session_scope(session_factory) as session:
        assert session.get(Job, job_id).label_source == "predicted"


def test_a_vanished_root_fails_the_job_with_a_reason(session_factory, spec, tmp_path):
    write_good_scans(tmp_path / "gone", 1)
    job_id = new_job(session_factory, tmp_path / "gone", spec)
    shutil.rmtree(tmp_path / "gone")
    assert enumerate_all(session_factory, job_id) == []
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.FAILED and "missing or unreadable" in job.error


def test_batches_record_one_result_per_scan_and_redelivery_does_nothing(
        session_factory, spec, analyzer, folder, tmp_path):
    job_id = new_job(session_factory, folder, spec)
    ids = enumerate_all(session_factory, job_id)
    out = tmp_path / "out"
    outcome = jobs.process_batch(session_factory, analyzer, job_id, ids, out)
    assert (outcome.analysed, outcome.failed, outcome.skipped) == (6, 1, 0)
    again = jobs.process_batch(session_factory, analyzer, job_id, ids, out)
    assert (again.analysed, again.failed, again.skipped) == (0, 0, 0)
    scans = scans_by_path(session_factory, job_id)
    assert "damaged" in scans["NO/broken.png"].error or "truncated" in scans["NO/broken.png"].error
    with session_scope(session_factory) as session:
        results = list(session.scalars(select(Result).where(Result.job_id == job_id)))
        assert len(results) == 6 and len({r.scan_id for r in results}) == 6
        for result in results:
            assert 0 <= result.peak_x < result.width and 0 <= result.peak_y < result.height
            assert (out / result.thumbnail).is_file() and (out / result.heatmap).is_file()
            # where it will be rendered: not written by a job whose overlays are on demand
            assert result.overlay.startswith(f"jobs/{job_id}/") and not (out / result.overlay).exists()
        assert session.scalar(select(func.count()).select_from(NeuronPartial)) == 1


def test_two_deliveries_in_flight_at_once_record_each_scan_once(
        session_factory, spec, analyzer, folder, tmp_path):
    """A redelivered batch that loaded before the first delivery committed finds nothing to do."""
    from worker import batch

    job_id = new_job(session_factory, folder, spec)
    ids = enumerate_all(session_factory, job_id)
    out = tmp_path / "out"
    first, second = (batch.write(batch.analyse(batch.decode(batch.load(session_factory, job_id, ids, out),
                                                              analyzer), analyzer))
                     for _ in range(2))
    outcome = batch.commit(session_factory, first)
    assert (outcome.analysed, outcome.failed, outcome.skipped) == (6, 1, 0)
    late = batch.commit(session_factory, second)
    assert (late.analysed, late.failed, late.skipped) == (0, 0, 7)
    with session_scope(session_factory) as session:
        per_scan = session.execute(select(Result.scan_id, func.count()).where(Result.job_id == job_id)
                                   .group_by(Result.scan_id)).all()
        assert len(per_scan) == 6 and {count for _, count in per_scan} == {1}
        statuses = {path: status for path, status in session.execute(
            select(Scan.path, Scan.status).where(Scan.job_id == job_id))}
    assert statuses["NO/broken.png"] == ScanStatus.FAILED
    assert sum(status == ScanStatus.DONE for status in statuses.values()) == 6
    assert statuses["yes/zz_copy.jpg"] == ScanStatus.DUPLICATE


def test_finalize_finishes_once_and_merges_neuron_statistics(session_factory, spec, analyzer,
                                                              folder, tmp_path):
    job_id = new_job(session_factory, folder, spec)
    ids = enumerate_all(session_factory, job_id)
    jobs.process_batch(session_factory, analyzer, job_id, ids[:3], tmp_path)
    assert jobs.finalize_job(session_factory, job_id) is False  # scans still pending
    jobs.process_batch(session_factory, analyzer, job_id, ids[3:], tmp_path)
    results = []
    threads = [threading.Thread(target=lambda: results.append(jobs.finalize_job(session_factory, job_id)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, True]
    with session_scope(session_factory) as session:
        stats = session.scalar(select(NeuronStats).where(NeuronStats.job_id == job_id))
        assert stats.label_source == "folder" and stats.n_scans == 6
        assert stats.n_neurons == 8 and len(np.frombuffer(stats.correlations, np.float32)) == 8
        assert session.scalar(select(func.count()).select_from(NeuronPartial)) == 0
        summary = job_summary(session, job_id)
    assert (summary["status"], summary["done"], summary["failed"], summary["duplicate"]) == ("done", 6, 1, 1)


def test_a_scan_that_never_finishes_fails_after_max_attempts(session_factory, spec, analyzer,
                                                             folder, tmp_path):
    from worker.batch import MAX_ATTEMPTS

    job_id = new_job(session_factory, folder, spec)
    ids = enumerate_all(session_factory, job_id)
    with session_scope(session_factory) as session:
        session.get(Scan, ids[0]).attempts = MAX_ATTEMPTS
    outcome = jobs.process_batch(session_factory, analyzer, job_id, ids[:1], tmp_path)
    assert outcome.failed == 1
    with session_scope(session_factory) as session:
        assert "never finished" in session.get(Scan, ids[0]).error


def test_a_failed_original_fails_its_copies(session_factory, spec, analyzer, tmp_path):
    root = tmp_path / "scans"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    job_id = new_job(session_factory, root, spec)
    ids = enumerate_all(session_factory, job_id)
    jobs.process_batch(session_factory, analyzer, job_id, ids, tmp_path)
    scans = scans_by_path(session_factory, job_id)
    assert scans["b.jpg"].status == ScanStatus.FAILED
    assert scans["b.jpg"].error.startswith("same content as a.jpg, which failed: ")


def test_a_new_job_reuses_done_results_of_the_same_model_and_method(session_factory, spec,
                                                                     analyzer, folder, tmp_path):
    out = tmp_path / "out"
    first = new_job(session_factory, folder, spec)
    enumerate_all(session_factory, first)
    process_all(session_factory, analyzer, first, out)
    second = new_job(session_factory, folder, spec)
    enumerate_all(session_factory, second)
    outcomes = process_all(session_factory, analyzer, second, out)
    assert sum(o.reused for o in outcomes) == 6 and sum(o.analysed for o in outcomes) == 0
    assert sum(o.images for o in outcomes) == 0  # nothing went through the model
    with session_scope(session_factory) as session:
        old = {r.scan.path: r for r in session.scalars(select(Result).where(Result.job_id == first))}
        new = {r.scan.path: r for r in session.scalars(select(Result).where(Result.job_id == second))}
        assert old.keys() == new.keys()
        for path, result in new.items():
            assert result.created_at == old[path].created_at  # copied, not recomputed
            assert result.overlay.startswith(f"jobs/{second}/")
            for kind in ("thumbnail", "heatmap"):
                assert (out / getattr(result, kind)).read_bytes() == (out / getattr(old[path], kind)).read_bytes()
    assert jobs.finalize_job(session_factory, second)
    with session_scope(session_factory) as session:
        stats = session.scalar(select(NeuronStats).where(NeuronStats.job_id == second))
        assert (stats.n_scans, stats.summary["reused_scans"]) == (0, 6)
    third = new_job(session_factory, folder, spec, method="gradcampp")
    enumerate_all(session_factory, third)
    assert sum(o.analysed for o in process_all(session_factory, analyzer, third, out)) == 6


def test_an_eager_job_writes_its_overlays_and_draws_those_of_the_results_it_reuses(
        session_factory, spec, analyzer, folder, tmp_path):
    from pipeline.io.overlays import overlay_png
    from pipeline.io.scans import read_scan

    out = tmp_path / "out"
    fresh = new_job(session_factory, folder, spec, method="cam", overlays="eager")
    enumerate_all(session_factory, fresh)
    assert sum(o.analysed for o in process_all(session_factory, analyzer, fresh, out)) == 6
    lazy = new_job(session_factory, folder, spec)
    enumerate_all(session_factory, lazy)
    assert sum(o.analysed for o in process_all(session_factory, analyzer, lazy, out)) == 6
    again = new_job(session_factory, folder, spec, overlays="eager")
    enumerate_all(session_factory, again)
    outcomes = process_all(session_factory, analyzer, again, out)
    # the on-demand job's thumbnails and maps are reused; the overlays it left are drawn from them
    assert sum(o.reused for o in outcomes) == 6 and sum(o.images for o in outcomes) == 0
    with session_scope(session_factory) as session:
        for job_id in (lazy, again, fresh):
            results = list(session.scalars(select(Result).where(Result.job_id == job_id)))
            assert len(results) == 6
            assert all((out / r.overlay).is_file() == (job_id != lazy) for r in results)
        for result in session.scalars(select(Result).where(Result.job_id.in_([again, fresh]))):
            with np.load(out / result.heatmap) as stored:
                drawn = overlay_png(read_scan(folder / result.scan.path)[0].pixels, stored["cam"])
            assert (out / result.overlay).read_bytes() == drawn
    with pytest.raises(jobs.JobError, match="unknown overlays 'later'"):
        new_job(session_factory, folder, spec, overlays="later")


def test_cancelled_jobs_take_no_new_batches(session_factory, spec, analyzer, folder, tmp_path):
    job_id = new_job(session_factory, folder, spec)
    ids = enumerate_all(session_factory, job_id)
    with session_scope(session_factory) as session:
        jobs.cancel_job(session, job_id)
    outcome = jobs.process_batch(session_factory, analyzer, job_id, ids, tmp_path)
    assert outcome.analysed == outcome.failed == 0
    with session_scope(session_factory) as session:
        assert jobs.job_summary(session, job_id)["status"] == "cancelled"
        with pytest.raises(jobs.JobError, match="already finished"):
            session.get(Job, job_id).status = JobStatus.DONE
            jobs.cancel_job(session, job_id)


def test_a_multi_frame_dicom_gives_one_result_per_frame(session_factory, spec, analyzer, tmp_path):
    from tests.builders.scans import make_dicom, synthetic_slice

    rng = np.random.default_rng(0)
    root = tmp_path / "scans"
    root.mkdir()
    make_dicom(root / "series.dcm", np.stack([synthetic_slice(rng, (48, 40)) for _ in range(3)]))
    job_id = new_job(session_factory, root, spec)
    enumerate_all(session_factory, job_id)
    first = process_all(session_factory, analyzer, job_id, tmp_path / "out")
    again = new_job(session_factory, root, spec)
    enumerate_all(session_factory, again)
    reused = process_all(session_factory, analyzer, again, tmp_path / "out")
    assert [o.images for o in first] == [3] and [o.reused for o in reused] == [1]
    with session_scope(session_factory) as session:
        for job in (job_id, again):
            scan = session.scalar(select(Scan).where(Scan.job_id == job))
            assert scan.frames == 3 and [r.frame for r in scan.results] == [0, 1, 2]
            assert [r.overlay.rsplit("/", 1)[1] for r in scan.results] == [
                f"series.dcm.f000{i}.overlay.png" for i in range(3)]
            assert {(r.width, r.height) for r in scan.results} == {(48, 40)}


def test_an_unexpected_error_in_one_scan_fails_only_that_scan(analyzer, caplog):
    from worker import batch

    good, bad = batch.Item(1, "good.png", None), batch.Item(2, "odd.png", None)
    good.inputs = [np.zeros(analyzer.input_shape, np.float32)]
    bad.inputs = [np.zeros((5, 5, 1), np.float32)]  # cannot join the batch: the pass raises
    work = batch.Work(1, Path("/"), "gradcam", "predicted", ("tumor",), Path("/out"), [good, bad])
    batch.analyse(work, analyzer)
    assert good.error is None and len(good.analyses) == 1
    assert bad.error == batch.INTERNAL_ERROR and "internal error" in bad.error
    assert any(r.exc_info for r in caplog.records if "odd.png" in r.getMessage())


def test_a_prepared_analyzer_costs_a_batch_no_store_write(analyzer):
    analyzer.ready()

    def no_store():
        raise AssertionError("prepare_analysis opened a transaction for a prepared model")

    assert jobs.prepare_analysis(no_store, 1, analyzer) is True
