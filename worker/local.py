"""Run a job in this process (``tumorlens scan --local`` and ``resume`` without a broker).

The walk comes first (so progress has a total), then the pending scans in batches through a
three-stage pipeline: while the model analyses batch i, one thread loads and decodes batch i+1
and ``WRITERS`` threads write the outputs of earlier batches and commit them, one transaction
per batch.

On Ctrl-C the batch being written still commits, the batches in flight are given back (their
scans stay pending, their attempt not counted) and KeyboardInterrupt propagates; the job stays
open for ``tumorlens resume``.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import update

from worker import batch
from worker.cpu import single_threaded_blas
from worker.db import SessionFactory, session_scope, write_scope
from worker.jobs import enumerate_job, finalize_job, job_analyzer, job_summary, prepare_analysis
from worker.models import Scan, ScanStatus
from worker.settings import get_settings
from worker.store import get_job, pending_scan_ids, scan_counts

Progress = Callable[[int, int], None]  # (scans finished, scans found)
# Writing a scan's outputs (~9 ms with the small CNN of bench_scan.py, GIL released while encoding)
# runs beside the model's pass (~11 ms). Measured with bench_scan.py's scans and model on a 2-core
# machine shared with a training process: 1 and 2 writers were within noise of each other over 7
# alternating runs (29-43 scans/s each, neither ahead consistently), 2 used slightly less CPU per
# scan (27-33 ms against 28-34 ms), 3 was never faster; so 2 stay. TensorFlow's thread pools are
# not set here: they are fixed when TensorFlow first runs, often before this module is reached, and
# one intra-op thread, which cut the CPU per scan ~10 % on the shared machine, caps the model's pass
# at one core when both are free. Running the decode and write threads at nice 5, so the model's
# threads win a contested core, changed nothing either (one process, 5 alternating rounds each:
# Xception 41.6 vs 41.3 scans/s, small CNN 130.7 vs 129.3).
WRITERS = 2


def run_local(session_factory: SessionFactory, job_id: int, output_dir: str | Path | None = None,
              analyzer=None, batch_size: int | None = None,
              on_progress: Progress | None = None) -> dict:
    """Walk, analyse and finalise job ``job_id`` here; return its summary."""
    single_threaded_blas()
    settings = get_settings()
    output_dir = Path(output_dir or settings.output_dir)
    report = on_progress or (lambda finished, total: None)
    with session_scope(session_factory) as session:
        if get_job(session, job_id).status in batch.CLOSED:
            return job_summary(session, job_id)
        analyzer = analyzer or job_analyzer(session, job_id)
    # Before the walk: a model that cannot be analysed is told once, in seconds, not after
    # hashing a whole archive, and no scan is claimed for it.
    if not prepare_analysis(session_factory, job_id, analyzer):
        return _summary(session_factory, job_id)
    single_threaded_blas()  # again: preparing loaded Keras, and SciPy's BLAS with it
    for _ in enumerate_job(session_factory, job_id):
        report(*_progress(session_factory, job_id))
    finished, total = _progress(session_factory, job_id)
    report(finished, total)
    if finished < total:
        stages = _Stages(session_factory, analyzer, job_id, output_dir)
        for outcome in stages.run(_batches(session_factory, job_id, batch_size or settings.batch_size)):
            finished += outcome.analysed + outcome.reused + outcome.failed + outcome.skipped
            report(finished, total)
    finalize_job(session_factory, job_id)
    return _summary(session_factory, job_id)


def _summary(session_factory: SessionFactory, job_id: int) -> dict:
    with session_scope(session_factory) as session:
        return job_summary(session, job_id)


def _progress(session_factory: SessionFactory, job_id: int) -> tuple[int, int]:
    with session_scope(session_factory) as session:
        counts = scan_counts(session, job_id)
    total = sum(counts.values())
    return total - counts[ScanStatus.PENDING.value], total


def _batches(session_factory: SessionFactory, job_id: int, size: int) -> Iterator[list[int]]:
    last = 0
    while True:
        with session_scope(session_factory) as session:  # short reads: no snapshot held for hours
            ids = next(pending_scan_ids(session, job_id, size, after=last), None)
        if not ids:
            return
        yield ids
        last = ids[-1]


class _Stages:
    """Load+decode, analyse and write+commit of consecutive batches, overlapped."""

    def __init__(self, session_factory: SessionFactory, analyzer, job_id: int, output_dir: Path):
        self.session_factory, self.analyzer = session_factory, analyzer
        self.job_id, self.output_dir = job_id, output_dir

    def run(self, batches: Iterator[list[int]]) -> Iterator[batch.BatchOutcome]:
        """Yield each batch's outcome as it commits, in order."""
        with ThreadPoolExecutor(1, "decode") as decoder, ThreadPoolExecutor(WRITERS, "write") as writer:
            ahead: Future | None = decoder.submit(self._prepare, next(batches, None))
            writing: deque[Future] = deque()
            current = None
            try:
                while ahead is not None:
                    current = ahead.result()
                    following = next(batches, None)
                    ahead = decoder.submit(self._prepare, following) if following else None
                    if current is None:
                        continue
                    batch.analyse(current, self.analyzer)
                    while len(writing) >= WRITERS:
                        yield writing.popleft().result()
                    writing.append(writer.submit(self._finish, current))
                    current = None
                while writing:
                    yield writing.popleft().result()
            except BaseException:
                self._give_back(current, ahead)
                raise

    def _prepare(self, scan_ids: list[int] | None) -> batch.Work | None:
        if not scan_ids:
            return None
        work = batch.load(self.session_factory, self.job_id, scan_ids, self.output_dir)
        return work and batch.decode(work, self.analyzer)

    def _finish(self, work: batch.Work) -> batch.BatchOutcome:
        return batch.commit(self.session_factory, batch.write(work))

    def _give_back(self, current: batch.Work | None, ahead: Future | None) -> None:
        claimed = [current] if current is not None else []
        if ahead is not None and not ahead.cancel():
            with contextlib.suppress(BaseException):
                claimed.append(ahead.result())
        ids = [item.scan_id for work in claimed if work is not None for item in work.items]
        if ids:
            with write_scope(self.session_factory) as session:
                session.execute(update(Scan).where(Scan.id.in_(ids), Scan.status == ScanStatus.PENDING)
                                .values(attempts=Scan.attempts - 1))
