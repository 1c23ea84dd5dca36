"""The stages of one batch of scans: load, decode, analyse, write outputs, commit.

``worker.jobs.process_batch`` runs them one after the other; ``worker.local`` overlaps them
across batches (the next batch is decoded and the previous one written while this one is
analysed). Only ``load`` and ``commit`` touch the store, each in one short transaction; a batch
that stops between them leaves its scans pending, to be picked up again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from sqlalchemy import select, update

from pipeline.io.scans import Scan as Image
from pipeline.io.scans import ScanError, read_scan
from worker.db import SessionFactory, write_scope
from worker.models import Job, JobStatus, Result, Scan, ScanStatus, utcnow
from worker.settings import get_settings
from worker.store import (copy_failure_message, earlier_results, get_job, insert_ignoring_conflicts,
                          upsert_partial)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # deliveries of a scan that never finished (killed, timed out) before it fails
INTERNAL_ERROR = ("this scan could not be analysed because of an internal error; the worker log "
                  "has the details")
# The files pipeline.explain.overlay.write_outputs writes beside a stem, by Result column.
OUTPUT_SUFFIXES = {"overlay": ".overlay.png", "thumbnail": ".thumb.jpg", "heatmap": ".heatmap.npz"}
CLOSED = (JobStatus.CANCELLED, JobStatus.DONE, JobStatus.FAILED)


@dataclasses.dataclass(eq=False)  # compared and hashed by identity: one object per scan
class Item:
    """One scan of the batch as it moves through the stages."""

    scan_id: int
    path: str
    label: int | None
    error: str | None = None
    reuse: list[Result] | None = None  # an earlier job's results for the same content
    images: list[Image] = dataclasses.field(default_factory=list, repr=False)
    inputs: list[np.ndarray] = dataclasses.field(default_factory=list, repr=False)
    analyses: list[dict] = dataclasses.field(default_factory=list, repr=False)
    rows: list[dict] = dataclasses.field(default_factory=list, repr=False)
    multi_frame: bool = False

    @property
    def to_analyse(self) -> bool:
        return self.error is None and self.reuse is None


@dataclasses.dataclass
class Work:
    """A loaded batch: the job's context and its still-pending scans."""

    job_id: int
    root: Path
    method: str
    label_source: str | None
    positive_classes: tuple[str, ...]
    output_dir: Path
    items: list[Item]
    job_error: str | None = None  # the model itself cannot be analysed: the job fails


@dataclasses.dataclass
class BatchOutcome:
    """What one batch did: scans analysed, reused, failed, skipped (already finished elsewhere)."""

    analysed: int = 0
    reused: int = 0
    failed: int = 0
    skipped: int = 0
    images: int = 0  # frames run through the model


def load(session_factory: SessionFactory, job_id: int, scan_ids: list[int],
         output_dir: Path) -> Work | None:
    """Claim the batch's pending scans (counting the attempt); None when the job is closed."""
    with write_scope(session_factory) as session:
        job = get_job(session, job_id)
        if job.status in CLOSED:
            return None
        query = (select(Scan).where(Scan.id.in_(scan_ids), Scan.job_id == job_id,
                                    Scan.status == ScanStatus.PENDING).order_by(Scan.id))
        scans = list(session.scalars(query))
        session.execute(update(Scan).where(Scan.id.in_([s.id for s in scans]))
                        .values(attempts=Scan.attempts + 1))
        reuse = earlier_results(session, job, [s.sha256 for s in scans if s.sha256])
        items = [_item(scan, reuse.get(scan.sha256), output_dir) for scan in scans]
        return Work(job.id, Path(job.root), job.method, job.label_source,
                    tuple(job.model.spec["positive_classes"]), output_dir, items)


def _item(scan: Scan, reuse: tuple[int | None, list[Result]] | None, output_dir: Path) -> Item:
    item = Item(scan.id, scan.path, scan.label)
    if scan.attempts >= MAX_ATTEMPTS:
        item.error = (f"the analysis of this scan was started {scan.attempts} times and never "
                      "finished (the worker was stopped or ran out of time each time)")
    elif reuse and all((output_dir / getattr(r, kind)).is_file()
                       for r in reuse[1] for kind in OUTPUT_SUFFIXES):
        item.multi_frame, item.reuse = reuse[0] is not None, reuse[1]
    return item


def decode(work: Work, analyzer) -> Work:
    """Read each scan to analyse and prepare its model inputs; failures stay with their scan."""
    for item in work.items:
        if item.to_analyse:
            _guarded(item, _decode_item, item, work.root, analyzer)
    return work


def _decode_item(item: Item, root: Path, analyzer) -> None:
    item.images = read_scan(root / item.path)
    item.multi_frame = item.images[0].frame is not None
    item.inputs = [analyzer.prepare(image.pixels) for image in item.images]


def _guarded(item: Item, step, *args) -> None:
    try:
        step(*args)
    except Exception as exc:
        _raise_if_out_of_time(exc)
        if isinstance(exc, ScanError):
            item.error = str(exc)
        else:
            log.exception("scan %s (%s) failed", item.scan_id, item.path)
            item.error = INTERNAL_ERROR
    if item.error is not None:
        item.images, item.inputs, item.analyses = [], [], []


def analyse(work: Work, analyzer, chunk_size: int | None = None) -> Work:
    """Run the model over every prepared frame, ``chunk_size`` frames per pass."""
    chunk_size = chunk_size or get_settings().batch_size
    frames = [(item, i) for item in work.items if item.to_analyse for i in range(len(item.inputs))]
    for start in range(0, len(frames), chunk_size):
        chunk = frames[start:start + chunk_size]
        try:
            _analyse_frames(chunk, analyzer)
        except Exception as exc:
            _raise_if_out_of_time(exc)
            if _is_model_error(exc):
                work.job_error = f"the model cannot be analysed: {exc}"
                break
            log.warning("a batch pass failed; analysing its scans one by one", exc_info=True)
            for item in dict.fromkeys(item for item, _ in chunk):
                _guarded(item, _analyse_frames, [(x, i) for x, i in chunk if x is item], analyzer)
    for item in work.items:
        item.inputs = []  # the pass is done: free the model inputs
    return work


def _raise_if_out_of_time(exc: BaseException) -> None:
    """Re-raise the task's soft time limit if it led to ``exc``: the batch ran out of time.

    The limit is a signal that raises wherever the process is; decoders and Keras wrap what they
    catch ("damaged file", "cannot load"), so the whole chain is searched. The batch then goes
    back to the queue whole instead of blaming the scan it was on.
    """
    from celery.exceptions import SoftTimeLimitExceeded  # only a Celery task has a time limit

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, SoftTimeLimitExceeded):
            raise cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


def _is_model_error(exc: Exception) -> bool:
    from pipeline.model.loading import ModelError  # TensorFlow is loaded by now: a pass was attempted

    return isinstance(exc, ModelError)


def _analyse_frames(frames: list[tuple[Item, int]], analyzer) -> None:
    batch = np.stack([item.inputs[i] for item, i in frames])
    result = analyzer.analyze(batch)
    for row, (item, i) in enumerate(frames):
        item.analyses.append({
            "frame": i, "cam": result.cams[row], "neurons": result.neurons[row],
            "probabilities": dict(zip(result.class_names, map(_rounded, result.probabilities[row]))),
            "predicted_class": result.class_names[int(result.predicted[row])],
            "tumor_probability": _rounded(result.tumor_probability[row]),
        })


def _rounded(value) -> float:
    return round(float(value), 6)  # float32 carries ~7 digits; more would be noise in exports


def write(work: Work) -> Work:
    """Write overlays, thumbnails and heatmaps, or link the reused ones; build the result rows."""
    for item in work.items if work.job_error is None else ():
        if item.error is None and item.reuse is not None:
            _guarded(item, _link_reused, item, work)
        elif item.error is None:
            _guarded(item, _write_item, item, work)
    return work


def output_stem(work: Work, item: Item, frame: int | None) -> Path:
    """Return where a frame's outputs go: ``<output>/jobs/<job>/<scan path>[.f<frame>]``."""
    name = item.path if frame is None else f"{item.path}.f{frame:04d}"
    return work.output_dir / "jobs" / str(work.job_id) / name


def _write_item(item: Item, work: Work) -> None:
    from pipeline.explain.overlay import write_outputs

    rows = []
    for analysis in item.analyses:
        image = item.images[analysis["frame"]]
        stem = output_stem(work, item, image.frame)
        outputs = write_outputs(stem, image.pixels, analysis["cam"])  # creates the folders
        rows.append(_row(item, work, image, analysis, outputs))
    item.rows, item.images = rows, []


def _row(item: Item, work: Work, image: Image, analysis: dict, outputs) -> dict:
    height, width = image.pixels.shape[:2]
    paths = {kind: Path(getattr(outputs, kind)).relative_to(work.output_dir).as_posix()
             for kind in OUTPUT_SUFFIXES}
    return {"scan_id": item.scan_id, "job_id": work.job_id, "frame": image.frame or 0,
            "width": width, "height": height, "predicted_class": analysis["predicted_class"],
            "tumor_probability": analysis["tumor_probability"],
            "probabilities": analysis["probabilities"], "method": work.method,
            "peak_x": int(outputs.peak[0]), "peak_y": int(outputs.peak[1]), **paths,
            "image_info": image.info, "created_at": utcnow()}


def _link_reused(item: Item, work: Work) -> None:
    rows = []
    for result in item.reuse:
        stem = output_stem(work, item, result.frame if item.multi_frame else None)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = {kind: _link(work.output_dir / getattr(result, kind),
                             stem.with_name(stem.name + suffix)).relative_to(work.output_dir).as_posix()
                 for kind, suffix in OUTPUT_SUFFIXES.items()}
        rows.append({**_result_fields(result), "scan_id": item.scan_id, "job_id": work.job_id,
                     **paths})
    item.rows = rows


def _link(source: Path, target: Path) -> Path:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copyfile(source, target)
    return target


def _result_fields(result: Result) -> dict:
    skip = {"id", "scan_id", "job_id"}
    return {c.key: getattr(result, c.key) for c in Result.__table__.columns if c.key not in skip}


def commit(session_factory: SessionFactory, work: Work) -> BatchOutcome:
    """Record the batch in one transaction, touching only scans that are still pending."""
    outcome, results, analysed = BatchOutcome(), [], []
    with write_scope(session_factory) as session:
        if work.job_error is not None:  # the scans stay pending: they were not the problem
            _fail_job(session, work)
            return outcome
        finished = _finish_scans(session, work.items)
        for item in work.items:
            if item.scan_id not in finished:
                outcome.skipped += 1
            elif item.error is not None:
                outcome.failed += 1
                _fail_copies(session, item)
            else:
                results.extend(item.rows)
                outcome.reused += item.reuse is not None
                outcome.analysed += item.reuse is None
                if item.reuse is None:
                    analysed.append(item)
        insert_ignoring_conflicts(session, Result, results)
        _record_neurons(session, work, analysed, outcome)
    return outcome


def _finish_scans(session, items: list[Item]) -> set[int]:
    """Mark the items' scans done or failed if still pending; return the ids that were.

    One UPDATE ... RETURNING per distinct outcome (usually one for the whole batch) instead of one
    per scan: the statements' construction and execution were most of a batch's commit time.
    """
    outcomes: dict[tuple, list[int]] = {}
    for item in items:
        status = ScanStatus.FAILED if item.error is not None else ScanStatus.DONE
        frames = len(item.rows) if item.multi_frame else None
        outcomes.setdefault((status, item.error, frames), []).append(item.scan_id)
    scans, now, finished = Scan.__table__, utcnow(), set()
    for (status, error, frames), ids in outcomes.items():
        statement = (update(scans).where(scans.c.id.in_(ids), scans.c.status == ScanStatus.PENDING)
                     .values(status=status, error=error, frames=frames, updated_at=now)
                     .returning(scans.c.id))
        finished.update(session.scalars(statement))
    return finished


def _fail_job(session, work: Work) -> None:
    session.execute(update(Job).where(Job.id == work.job_id, Job.status.not_in(CLOSED))
                    .values(status=JobStatus.FAILED, error=work.job_error, finished_at=utcnow()))


def _fail_copies(session, item: Item) -> None:
    session.execute(update(Scan).where(Scan.duplicate_of_id == item.scan_id,
                                       Scan.status == ScanStatus.DUPLICATE)
                    .values(status=ScanStatus.FAILED, updated_at=utcnow(),
                            error=copy_failure_message(item.path, item.error)))


def _record_neurons(session, work: Work, items: list[Item], outcome: BatchOutcome) -> None:
    from pipeline.explain.neurons import NeuronAccumulator, neuron_softmax

    vectors, labels = [], []
    for item in items:
        for analysis in item.analyses:
            label = _neuron_label(work, item, analysis)
            if label is not None:
                vectors.append(analysis["neurons"])
                labels.append(label)
        outcome.images += len(item.analyses)
    if not vectors:
        return
    accumulator = NeuronAccumulator(len(vectors[0]))
    accumulator.update(neuron_softmax(np.stack(vectors)), np.asarray(labels))
    key = hashlib.sha256(",".join(str(i.scan_id) for i in items).encode()).hexdigest()
    upsert_partial(session, work.job_id, key, accumulator.to_bytes())


def _neuron_label(work: Work, item: Item, analysis: dict) -> int | None:
    if work.label_source == "folder":
        return item.label  # scans outside the YES/NO folders have none and are left out
    return int(analysis["predicted_class"] in work.positive_classes)
