"""Jobs: the functions that run a job, the same in-process (``worker.local``) and under Celery.

    create_job(session, root, spec, method, created_by=None) -> Job
    enumerate_job(session_factory, job_id, chunk_size=500) -> Iterator[list[int]]
    process_batch(session_factory, analyzer, job_id, scan_ids, output_dir) -> BatchOutcome
    finalize_job(session_factory, job_id) -> bool
    cancel_job(session, job_id); reopen_job(session, job_id)
    pending_scan_ids(session, job_id, chunk_size=500) -> Iterator[list[int]]
    job_summary(session, job_id) -> dict
    job_analyzer(session, job_id) -> pipeline.explain.analysis.Analyzer

Functions given a ``session`` never commit it (the caller does); those given a
``session_factory`` open their own short transactions, never one held across an analysis.

- Enumeration records scans in chunks with their content hash and folder label; re-running it
  inserts nothing twice and hashes only files it has not recorded. A scan whose content (sha256)
  a lower-id scan of the same job has is ``duplicate`` of that one (so which copy is analysed
  does not depend on timing); if that one failed, the copy fails with the same reason. A folder
  that cannot be read, a link out of the root or a link loop becomes a failed scan saying so
  (``worker.walk``). ``label_source`` is ``folder`` when the root has YES/NO folders, else
  ``predicted`` (neuron statistics then use the predicted class as the label). DICOM files are
  linked to their series as they are recorded; the scans of a series whose tags rule it out are
  ``skipped``, unless the job has ``all_series`` (``worker.series``).
- Processing touches only scans still pending, so a redelivered batch does nothing twice. A scan
  whose content was already analysed, done, by an earlier job with the same model (digest) and
  method reuses that job's results: rows copied, output files hard-linked (copied across
  devices), nothing recomputed; reused scans do not enter this job's neuron statistics.
  ``attempts`` counts deliveries; a scan that started ``MAX_ATTEMPTS`` times without finishing
  fails. ``worker.batch`` holds the stages of one batch.
  The model is prepared (``prepare_analysis``: load, graph, one blank pass) before any scan is
  claimed; a model that cannot be analysed at all (``pipeline.model.loading.ModelError``) fails
  the job with one message naming it, and leaves its scans pending: none fails for the model.
- Finalising merges the batches' neuron partials once, with a conditional UPDATE, and in the same
  transaction orders each DICOM series' slices and records its result (``worker.series``).
- Cancelling stops new batches; pending scans stay pending. ``reopen_job`` makes a cancelled or
  failed job resumable: the walk runs again, adding only new files. A job that failed before
  any scan was analysed takes its model.json as it is now, so a spec fixed after the failure
  is used on resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, exists, func, select, update

from pipeline.io.scans import ScanError, sha256_file
from worker import batch
from worker.batch import BatchOutcome
from worker.db import SessionFactory, session_scope, write_scope
from worker.models import (OVERLAY_MODES, OVERLAYS_ON_DEMAND, Job, JobStatus, NeuronPartial, NeuronStats,
                           Result, Scan, ScanStatus, utcnow)
from worker.series import FOUND, attach_series, finish_series, read_slices
from worker.settings import dicom_uid_key
from worker.store import (add_scans, existing_paths, get_job, job_summary, mark_duplicates,
                          model_for_spec, pending_scan_ids)
from worker.walk import Entry, folder_labels, path_label, walk

if TYPE_CHECKING:
    from pipeline.model.spec import ModelSpec

__all__ = ["JobError", "create_job", "enumerate_job", "process_batch", "finalize_job", "cancel_job",
           "reopen_job", "pending_scan_ids", "job_summary", "job_analyzer", "prepare_analysis",
           "fail_job", "BatchOutcome"]

HASH_THREADS = 4  # hashing is I/O bound on network storage; a few readers hide the latency
OPEN_STATES = (JobStatus.PENDING, JobStatus.ENUMERATING)
NEURONS_KEPT = 50  # strongest neurons of each sign kept in the job's summary


class JobError(ValueError):
    """A job cannot be created or run; the message says why and what to do."""


def create_job(session, root: str | os.PathLike, spec: ModelSpec, method: str,
               created_by: int | None = None, overlays: str = OVERLAYS_ON_DEMAND,
               all_series: bool = False) -> Job:
    """Record a job over ``root`` with the model of ``spec``; the caller commits.

    ``overlays`` is ``on-demand`` (full-size overlays rendered when asked for) or ``eager``;
    ``all_series`` analyses every DICOM series, not only those the selection rules pass.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise JobError(f"no such folder: {root}")
    check_method(method)
    if overlays not in OVERLAY_MODES:
        raise JobError(f"unknown overlays {overlays!r}: choose one of {', '.join(OVERLAY_MODES)}")
    job = Job(root=str(root.resolve()), model=model_for_spec(session, spec), method=method,
              created_by_id=created_by, status=JobStatus.PENDING, overlays=overlays,
              all_series=all_series)
    session.add(job)
    session.flush()
    return job


def check_method(method: str) -> None:
    """Raise JobError unless ``method`` is a CAM method the analysis knows."""
    from pipeline.explain.analysis import METHODS  # numpy/Pillow only: safe in the web process

    if method not in METHODS:
        raise JobError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


def enumerate_job(session_factory: SessionFactory, job_id: int,
                  chunk_size: int = 500) -> Iterator[list[int]]:
    """Walk the job's folder, record scans chunk by chunk, yield each chunk's new pending ids."""
    root = _start_enumeration(session_factory, job_id)
    if root is None:
        return
    # Closed at once when this generator stops (cancelled, time limit, consumer gone): the walk
    # drops its temporary files then, not whenever the garbage collector gets to it.
    key = dicom_uid_key()
    with (closing(walk(root)) as entries,
          ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="hash") as pool):
        while chunk := list(islice(entries, chunk_size)):
            ids = _record_chunk(session_factory, job_id, root, chunk, pool, key)
            if ids is None:
                return  # cancelled meanwhile
            if ids:
                yield ids
    with write_scope(session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.ENUMERATING)
                        .values(status=JobStatus.RUNNING))


def _start_enumeration(session_factory: SessionFactory, job_id: int) -> Path | None:
    with write_scope(session_factory) as session:
        job = get_job(session, job_id)
        if job.status not in OPEN_STATES:
            return None
        root = Path(job.root)
        if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
            job.status, job.error = JobStatus.FAILED, f"the folder {root} is missing or unreadable"
            job.finished_at = utcnow()
            return None
        job.status = JobStatus.ENUMERATING
        job.started_at = job.started_at or utcnow()
        job.label_source = "folder" if folder_labels(root) else "predicted"
        return root


def _record_chunk(session_factory: SessionFactory, job_id: int, root: Path, chunk: list[Entry],
                  pool: ThreadPoolExecutor, key: bytes) -> list[int] | None:
    """Record a chunk's new scans; return their pending ids, or None if the job was cancelled.

    The store is asked which of the chunk's paths it already has, so a resumed walk holds no more
    than the first one did, however much was recorded before it. DICOM slices are linked to their
    series (``worker.series``); those of a series not to be analysed are recorded skipped.
    """
    with session_scope(session_factory) as session:
        known = existing_paths(session, job_id, (e.path for e in chunk))
    rows = list(pool.map(lambda entry: _scan_row(root, entry, key), [e for e in chunk if e.path not in known]))
    with write_scope(session_factory) as session:
        job = get_job(session, job_id)
        if job.status == JobStatus.CANCELLED:
            return None
        attach_series(session, job, rows)
        ids = add_scans(session, job_id, rows)
        mark_duplicates(session, job_id, ids)
        query = select(Scan.id).where(Scan.id.in_(ids), Scan.status == ScanStatus.PENDING)
        return sorted(session.scalars(query)) if ids else []


def _scan_row(root: Path, entry: Entry, key: bytes) -> dict:
    row = {"path": entry.path, "label": path_label(entry.path), "sha256": None}
    if entry.error is not None:
        return {**row, "status": ScanStatus.FAILED, "error": entry.error}
    try:
        row["sha256"] = sha256_file(root / entry.path)
    except ScanError as exc:  # gone, unreadable, not a regular file: said in words
        return {**row, "status": ScanStatus.FAILED, "error": str(exc)}
    found = read_slices(root, entry.path, key)  # the header, while the file is in the page cache
    return row if found is None else {**row, FOUND: found}


def finalize_job(session_factory: SessionFactory, job_id: int) -> bool:
    """Finish the job if nothing is pending and enumeration is over; True for the call that did."""
    pending = exists().where(Scan.job_id == job_id, Scan.status == ScanStatus.PENDING)
    with write_scope(session_factory) as session:
        finished = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, ~pending)
            .values(status=JobStatus.DONE, finished_at=utcnow())).rowcount == 1
        if finished:
            job = get_job(session, job_id)
            session.add(neuron_stats_for(session, job))
            finish_series(session, job)
    return finished


def neuron_stats_for(session, job: Job, top: int = NEURONS_KEPT) -> NeuronStats:
    """Merge the job's batch partials into its NeuronStats and drop the partials."""
    from pipeline.explain.neurons import NeuronAccumulator

    merged = None
    for payload in session.scalars(select(NeuronPartial.payload).where(NeuronPartial.job_id == job.id)):
        partial = NeuronAccumulator.from_bytes(payload)
        merged = partial if merged is None else merged.merge(partial)
    session.execute(delete(NeuronPartial).where(NeuronPartial.job_id == job.id))
    stats = NeuronStats(job_id=job.id, label_source=job.label_source or "predicted", n_scans=0,
                        n_neurons=0, correlations=b"", summary={})
    if merged is not None:
        result = merged.result(top=top)
        stats.n_scans, stats.n_neurons = merged.n_scans, merged.n_neurons
        stats.correlations = np.asarray(result.correlations, np.float32).tobytes()
        stats.summary = result.summary()
    stats.summary["reused_scans"] = _reused_scans(session, job)
    return stats


def _reused_scans(session, job: Job) -> int:
    # A result created before its job existed can only have been copied from an earlier job.
    query = (select(func.count(func.distinct(Result.scan_id)))
             .where(Result.job_id == job.id, Result.created_at < job.created_at))
    return session.scalar(query) or 0


def cancel_job(session, job_id: int) -> Job:
    """Stop a job: no new batches start; scans not yet analysed stay pending."""
    job = get_job(session, job_id)
    if job.status in (JobStatus.DONE, JobStatus.FAILED):
        raise JobError(f"job {job_id} has already finished ({job.status.value})")
    job.status, job.finished_at = JobStatus.CANCELLED, utcnow()
    return job


def reopen_job(session, job_id: int) -> Job:
    """Make a cancelled or failed job resumable: the walk is redone, only new files are added."""
    job = get_job(session, job_id)
    if job.status in (JobStatus.CANCELLED, JobStatus.FAILED):
        _take_fixed_model(session, job)
        job.status, job.error, job.finished_at = JobStatus.PENDING, None, None
    return job


def _take_fixed_model(session, job: Job) -> None:
    """Point a job that has no results yet at its model.json as it is now (a fixed spec)."""
    from pipeline.model.spec import SpecError, load_spec

    try:
        spec = load_spec(job.model.spec_path)
    except (SpecError, OSError):
        return  # told in words when the job runs
    has_results = session.scalar(select(exists().where(Result.job_id == job.id)))
    if spec.digest() != job.model.digest and not has_results:
        job.model = model_for_spec(session, spec)


def prepare_analysis(session_factory: SessionFactory, job_id: int, analyzer) -> bool:
    """Prepare the job's model before any scan is claimed; fail the job in words if it cannot be.

    Returns:
        True when the model is ready; False when the job was failed because of it.
    """
    from pipeline.model.loading import ModelError

    if analyzer.prepared:  # a process's cached analyzer: nothing to write, nothing to run again
        return True
    with write_scope(session_factory) as session:  # the job's clock counts the preparation too
        session.execute(update(Job).where(Job.id == job_id, Job.started_at.is_(None))
                        .values(started_at=utcnow()))
    try:
        analyzer.ready()
    except ModelError as exc:
        batch.raise_if_out_of_time(exc)  # a task's time limit is no fault of the model
        fail_job(session_factory, job_id, f"the model {analyzer.spec.name} cannot be analysed: {exc}")
        return False
    return True


def fail_job(session_factory: SessionFactory, job_id: int, message: str) -> None:
    """Mark a job that cannot run at all (its model is unusable, gone or changed) failed, saying why."""
    with write_scope(session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status.not_in(batch.CLOSED))
                        .values(status=JobStatus.FAILED, error=message, finished_at=utcnow()))


def job_analyzer(session, job_id: int):
    """Return an Analyzer for the job's model and method; the model loads on first use."""
    from pipeline.explain.analysis import Analyzer
    from pipeline.model.spec import load_spec

    job = get_job(session, job_id)
    spec = load_spec(job.model.spec_path)
    if spec.digest() != job.model.digest:
        raise JobError(f"the model at {job.model.spec_path} has changed since job {job_id} was "
                       "created; start a new scan to use the new model")
    return Analyzer(spec, method=job.method)


def process_batch(session_factory: SessionFactory, analyzer, job_id: int, scan_ids: list[int],
                  output_dir: str | os.PathLike) -> BatchOutcome:
    """Analyse the batch's pending scans and record the results in one transaction."""
    work = batch.load(session_factory, job_id, scan_ids, Path(output_dir))
    if work is None:
        return BatchOutcome()
    batch.write(batch.analyse(batch.decode(work, analyzer), analyzer))
    return batch.commit(session_factory, work)
