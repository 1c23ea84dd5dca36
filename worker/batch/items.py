"""What a batch carries through its stages, and how one scan's failure stays with that scan."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from pipeline.io.scans import Scan as Image
from pipeline.io.scans import ScanError
from worker.models import JobStatus, Result

log = logging.getLogger("worker.batch")

MAX_ATTEMPTS = 3  # deliveries of a scan that never finished (killed, timed out) before it fails
INTERNAL_ERROR = ("this scan could not be analysed because of an internal error; the worker log "
                  "has the details")
# The files pipeline.explain.overlay.write_outputs writes beside a stem, by Result column (the
# overlay only in an eager job: otherwise its path is where it will be rendered).
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
    eager_overlays: bool = False  # write the full-size overlays now, not on demand


@dataclasses.dataclass
class BatchOutcome:
    """What one batch did: scans analysed, reused, failed, skipped (already finished elsewhere)."""

    analysed: int = 0
    reused: int = 0
    failed: int = 0
    skipped: int = 0
    images: int = 0  # frames run through the model


def guarded(item: Item, step, *args) -> None:
    try:
        step(*args)
    except Exception as exc:
        raise_if_out_of_time(exc)
        if isinstance(exc, ScanError):
            item.error = str(exc)
        else:
            log.exception("scan %s (%s) failed", item.scan_id, item.path)
            item.error = INTERNAL_ERROR
    if item.error is not None:
        item.images, item.inputs, item.analyses = [], [], []


def raise_if_out_of_time(exc: BaseException) -> None:
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
