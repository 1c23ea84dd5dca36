"""A job's full-size overlays drawn from its source scans and stored maps (``export --overlays``).

A job whose overlays are on demand stores each scan's map and thumbnail only; this draws the
overlays of a whole job into a folder, one task per source file (a multi-frame scan is decoded
once for all its frames) in ``processes`` worker processes, the store read in pages as it goes.
Each overlay is byte-for-byte the one ``scan --overlays eager`` writes (``overlay_png``). A scan
whose source is gone or changed is told and skipped; the others are drawn.

Needs no TensorFlow.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.models import Result, Scan, ScanStatus
from worker.store import get_job

PAGE = 500  # results read from the store at a time
IN_FLIGHT = 4  # tasks queued per process: enough to keep each busy, never the whole job


@dataclass
class SourceTask:
    """One source file and the overlays of its frames: (frame, stored map, target)."""

    path: str  # relative to the job's folder, as reported
    source: str
    sha256: str | None
    frames: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class Rendered:
    """What a run drew: overlays written, and the scans that could not be drawn with why."""

    written: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (scan path, reason)
    undrawn: set[str] = field(default_factory=set)  # the targets not written


def overlay_target(folder: Path, job_id: int, stored: str) -> Path:
    """Return where an overlay goes under ``folder``: its stored path without ``jobs/<job>/``."""
    parts = PurePosixPath(stored).parts
    inside = parts[2:] if parts[:2] == ("jobs", str(job_id)) else parts
    return folder.joinpath(*inside)


def render_task(task: SourceTask) -> int:
    """Draw one source file's overlays; return how many (runs in a worker process)."""

    from pipeline.explain.overlay import replace_file
    from pipeline.io.npz import load_arrays
    from pipeline.io.overlays import overlay_png, source_frames

    frames = source_frames(task.source, task.sha256)
    for frame, heatmap, target in task.frames:
        if frame not in frames:
            raise LookupError(f"the scan file has no frame {frame} any more")
        png = overlay_png(frames[frame], load_arrays(heatmap)["cam"])
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        replace_file(Path(target), png)
    return len(task.frames)


def job_tasks(session: Session, job_id: int, output_dir: Path, folder: Path) -> Iterator[SourceTask]:
    """Yield the job's analysed scans as tasks, in scan order, a page of results at a time.

    A duplicate has no overlay of its own: its record points at its original's.
    """
    root = Path(get_job(session, job_id).root)
    query = (select(Scan.path, Scan.sha256, Result.frame, Result.heatmap, Result.overlay)
             .join(Result, Result.scan_id == Scan.id)
             .where(Scan.job_id == job_id, Scan.status == ScanStatus.DONE)
             .order_by(Scan.id, Result.frame).execution_options(yield_per=PAGE))
    task: SourceTask | None = None
    for path, sha256, frame, heatmap, overlay in session.execute(query):
        if task is None or task.path != path:
            if task is not None:
                yield task
            task = SourceTask(path, str(root / path), sha256)
        task.frames.append((frame, str(output_dir / heatmap), str(overlay_target(folder, job_id, overlay))))
    if task is not None:
        yield task


def render_job(session: Session, job_id: int, output_dir: str | Path, folder: str | Path,
               processes: int | None = None,
               on_progress: Callable[[int], None] | None = None) -> Rendered:
    """Draw every overlay of job ``job_id`` under ``folder``; return what was drawn and what not."""
    output_dir, folder = Path(output_dir), Path(folder)
    processes = processes or os.cpu_count() or 1
    done = Rendered()
    report = on_progress or (lambda scans: None)
    with ProcessPoolExecutor(processes) as pool:
        pending: deque[tuple[SourceTask, Future]] = deque()
        for task in job_tasks(session, job_id, output_dir, folder):
            pending.append((task, pool.submit(render_task, task)))
            if len(pending) >= processes * IN_FLIGHT:
                _collect(*pending.popleft(), done, report)
        while pending:
            _collect(*pending.popleft(), done, report)
    return done


def _collect(task: SourceTask, future: Future, done: Rendered, report: Callable[[int], None]) -> None:
    try:
        done.written += future.result()
    except Exception as exc:  # a scan that cannot be drawn is told; the others carry on
        done.problems.append((task.path, str(exc) or type(exc).__name__))
        done.undrawn.update(target for _, _, target in task.frames)
    report(1)
