"""Stage 5: record the batch in one transaction, touching only scans that are still pending."""

from __future__ import annotations

import hashlib

import numpy as np
from sqlalchemy import update

from worker.batch.items import CLOSED, BatchOutcome, Item, Work
from worker.db import SessionFactory, write_scope
from worker.models import Job, JobStatus, Result, Scan, ScanStatus, utcnow
from worker.store import copy_failure_message, insert_ignoring_conflicts, upsert_partial


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
