"""Run a job in this process (``tumorlens scan --local`` and ``resume`` without a broker).

The model is prepared first (a model that cannot be analysed is told once, before anything is
walked or claimed). Then the walk and the analysis overlap: a thread walks and hashes the folder,
recording it chunk by chunk, and the pending scans go in batches, as soon as their chunk is
recorded, through a three-stage pipeline: while the model analyses batch i, one thread loads and
decodes batch i+1 and ``WRITERS`` threads write the outputs of earlier batches and commit them,
one transaction per batch. The progress total grows with the walk, as a queued job's does.

On Ctrl-C the batch being written still commits, the batches in flight are given back (their
scans stay pending, their attempt not counted), the walk stops after the chunk it is recording,
and KeyboardInterrupt propagates; the job stays open for ``tumorlens resume``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select, update

from worker import batch
from worker.cpu import single_threaded_blas
from worker.db import SessionFactory, session_scope, write_scope
from worker.jobs import enumerate_job, finalize_job, job_analyzer, job_summary, prepare_analysis
from worker.models import Scan, ScanStatus
from worker.settings import get_settings
from worker.store import get_job, pending_scan_ids, scan_counts

Progress = Callable[[int, int], None]  # (scans finished, scans found)
# Writing a scan's thumbnail and map and committing its batch (~1.5 ms CPU a scan on Br35H,
# benchmarks/bench_scan.py's serial stages) runs beside the model's pass (~2.5 ms for the default
# model, ~25 ms for Xception at 150 px). 1, 2 and 3 writers were within noise of each other (400
# scans, 5 alternating rounds on the shared 2-core machine: default model 168 / 156 / 160 scans/s,
# CPU 5.98 / 6.02 / 6.19 ms a scan; small CNN 174 / 170 / 173 scans/s); 2 stay, so an eager job's
# overlay PNGs (fpng holds the GIL ~1.4 ms a scan) do not queue behind one another. TensorFlow's
# thread pools are not set here: they are fixed when TensorFlow first runs, often before this
# module is reached, and one intra-op thread, which cut the CPU per scan ~10 % on the shared
# machine, caps the model's pass at one core when both are free. Running the decode and write
# threads at nice 5, so the model's threads win a contested core, changed nothing either (one
# process, 5 alternating rounds each: Xception 41.6 vs 41.3 scans/s, small CNN 130.7 vs 129.3).
WRITERS = 2
_END = object()  # what the decode stage returns once the walk is over and nothing is pending


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
    walk = _Walk(session_factory, job_id, report)
    try:
        stages = _Stages(session_factory, analyzer, job_id, output_dir)
        for outcome in stages.run(walk.batches(batch_size or settings.batch_size), walk.stop):
            walk.finished(outcome.analysed + outcome.reused + outcome.failed + outcome.skipped)
    finally:
        walk.stop()
    walk.join()
    report(*_progress(session_factory, job_id))
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


class _Walk:
    """The job's walk in a thread of its own, the batches of pending scans it leaves, and progress.

    Batches are read from the store in id order (keyset pages): the scans an earlier run recorded
    first, then each chunk once the walk has recorded it and reported the new total (so a file
    removed after that fails as gone, as when the whole walk came first); when nothing is pending
    the reader waits for the next chunk or the walk's end. Progress is reported by both threads,
    one at a time, with the counts at that moment.
    """

    def __init__(self, session_factory: SessionFactory, job_id: int, report: Progress):
        self.session_factory, self.job_id, self._report = session_factory, job_id, report
        self._changed = threading.Condition()
        self._done, self._stopped = False, False
        self._error: BaseException | None = None
        with session_scope(session_factory) as session:  # what earlier runs recorded is released
            self._released = session.scalar(select(func.max(Scan.id)).where(Scan.job_id == job_id)) or 0
        self._finished, self._total = _progress(session_factory, job_id)
        report(self._finished, self._total)
        self._thread = threading.Thread(target=self._run, name="walk", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with contextlib.closing(enumerate_job(self.session_factory, self.job_id)) as chunks:
                for ids in chunks:
                    total = _progress(self.session_factory, self.job_id)[1]
                    with self._changed:  # recorded minus pending: failed or duplicate at once
                        self._finished += total - self._total - len(ids)
                        self._total = total
                        self._report(min(self._finished, total), total)
                        self._released = max(self._released, ids[-1])
                        self._changed.notify_all()
                        if self._stopped:
                            return
        except BaseException as exc:  # given to the batch reader and to join()
            self._error = exc
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def batches(self, size: int) -> Iterator[list[int]]:
        """Yield the pending scan ids in batches of ``size`` until the walk is over (or stopped)."""
        last = 0
        while True:
            with self._changed:
                walking, released = not self._done, self._released
            with session_scope(self.session_factory) as session:  # short reads: no snapshot held
                page = next(pending_scan_ids(session, self.job_id, size, after=last), [])
            ids = [i for i in page if i <= released] if walking else page
            if ids:
                yield ids
                last = ids[-1]
                continue
            if not walking:  # the walk had ended before this read: nothing more will come
                if self._error is not None:
                    raise self._error
                return
            with self._changed:
                self._changed.wait_for(lambda: self._released != released or self._done or self._stopped)
                if self._stopped:
                    return

    def finished(self, scans: int) -> None:
        """Count ``scans`` finished by a batch and report the progress."""
        with self._changed:
            self._finished += scans
            self._report(min(self._finished, self._total), self._total)

    def stop(self) -> None:
        """Stop the walk after the chunk it is recording, and the batch reader at once."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def join(self) -> None:
        """Wait for the walk; raise what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Stages:
    """Load+decode, analyse and write+commit of consecutive batches, overlapped."""

    def __init__(self, session_factory: SessionFactory, analyzer, job_id: int, output_dir: Path):
        self.session_factory, self.analyzer = session_factory, analyzer
        self.job_id, self.output_dir = job_id, output_dir

    def run(self, batches: Iterator[list[int]], stop: Callable[[], None]) -> Iterator[batch.BatchOutcome]:
        """Yield each batch's outcome as it commits, in order; ``stop`` ends ``batches`` early.

        The decode thread takes the batches from ``batches`` itself: waiting for the walk's next
        chunk holds neither the model nor the writers.
        """
        with ThreadPoolExecutor(1, "decode") as decoder, ThreadPoolExecutor(WRITERS, "write") as writer:
            ahead: Future | None = decoder.submit(self._prepare, batches)
            writing: deque[Future] = deque()
            current = None
            try:
                while (current := ahead.result()) is not _END:
                    ahead = decoder.submit(self._prepare, batches)
                    if current is None:
                        continue
                    batch.analyse(current, self.analyzer)
                    while len(writing) >= WRITERS:
                        yield writing.popleft().result()
                    writing.append(writer.submit(self._finish, current))
                    current = None
                ahead = None
                while writing:
                    yield writing.popleft().result()
            except BaseException:
                stop()  # a decode thread waiting for the walk returns at once
                self._give_back(current, ahead)
                raise

    def _prepare(self, batches: Iterator[list[int]]):
        scan_ids = next(batches, None)
        if scan_ids is None:
            return _END
        work = batch.load(self.session_factory, self.job_id, scan_ids, self.output_dir)
        return work and batch.decode(work, self.analyzer)

    def _finish(self, work: batch.Work) -> batch.BatchOutcome:
        return batch.commit(self.session_factory, batch.write(work))

    def _give_back(self, current: batch.Work | None, ahead: Future | None) -> None:
        claimed = [current] if isinstance(current, batch.Work) else []
        if ahead is not None and not ahead.cancel():
            with contextlib.suppress(BaseException):
                claimed.append(ahead.result())
        ids = [item.scan_id for work in claimed if isinstance(work, batch.Work) for item in work.items]
        if ids:
            with write_scope(self.session_factory) as session:
                session.execute(update(Scan).where(Scan.id.in_(ids), Scan.status == ScanStatus.PENDING)
                                .values(attempts=Scan.attempts - 1))
