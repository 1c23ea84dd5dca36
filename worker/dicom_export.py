"""A job's overlays as DICOM a PACS files beside the source series (``export --format dicom``).

The ONE export that carries identifiers: every object copies the patient and study modules of
its source file (same StudyInstanceUID, so the PACS files it in the source's study), and it is
made only when asked for, into a folder named by the caller. Nothing of it is logged or stored.

Per analysed DICOM series (``Series.analysed``) one new series of Secondary Capture images, built
by highdicom (``SCImage.from_ref_dataset``, which checks the IOD's requirements): one image per
analysed slice, a multi-frame file's frames each their own image. One image a slice, not one
multi-frame object, because highdicom's SC is single-frame, and because a PACS viewer then stacks
the overlays in the source's order (InstanceNumber = slice_index + 1) and each image names its
one source instance (and frame) in ReferencedImageSequence. The pixels are the full-size overlay
``export --overlays`` draws, as RGB. The source files are read again from the job's root; one
gone or changed (its SHA-256 differs from the one recorded) is told per slice and skipped.

Needs no TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.models import JobStatus, Result, Scan, ScanStatus, Series
from worker.store import get_job

DICOM_FORMAT = "dicom"
MANUFACTURER = "tumorlens"
SERIES_NUMBER_BASE = 9000  # new series numbered apart from the scanner's: 9000 + the source's
DESCRIPTION_CHARS = 64  # SeriesDescription is an LO


class NotFinished(Exception):
    """The job is not done: its series are not yet ordered nor concluded."""


@dataclass
class SliceTask:
    """One analysed image of a source file: its frame (0 for one image), map and place."""

    frame: int
    multi_frame: bool
    heatmap: str
    instance_number: int
    target: str


@dataclass
class SourceFile:
    """One source file of an analysed series and the SC images to make from it."""

    path: str  # relative to the job's root, as the other exports report it
    source: str
    sha256: str | None
    series_uid: str  # the new series'
    series_number: int
    method: str
    model: str
    slices: list[SliceTask] = field(default_factory=list)


@dataclass
class DicomWritten:
    """What an export wrote: series and images, and the slices skipped with why."""

    series: int = 0
    images: int = 0
    skipped: list[tuple[str, int | None, str]] = field(default_factory=list)  # (path, frame, reason)


def source_files(session: Session, job_id: int, output_dir: Path, folder: Path) -> Iterator[SourceFile]:
    """Yield the analysed slices of the job's analysed series, grouped by source file."""
    from highdicom import UID

    job = get_job(session, job_id)
    if job.status != JobStatus.DONE:  # slice order and the series' verdicts come when it is done
        raise NotFinished(f"job {job_id} is {job.status.value}: its DICOM export can be made when it is done")
    root = Path(job.root)
    query = (select(Series.id, Series.number, Scan.path, Scan.sha256, Scan.frames, Scan.slice_index,
                    Scan.frame_slices, Result.frame, Result.heatmap, Result.method)
             .join(Scan, Scan.series_id == Series.id).join(Result, Result.scan_id == Scan.id)
             .where(Series.job_id == job_id, Series.analysed.is_(True), Scan.status == ScanStatus.DONE)
             .order_by(Series.id, Scan.id, Result.frame))
    new_series: dict[int, tuple[str, int, int]] = {}  # series id -> (uid, number, folder index)
    task: SourceFile | None = None
    for row in session.execute(query):
        series_id, number, path, sha256, frames, index, frame_slices, frame, heatmap, method = row
        if series_id not in new_series:
            position = len(new_series) + 1
            new_series[series_id] = (str(UID()), SERIES_NUMBER_BASE + (number or position), position)
        uid, series_number, position = new_series[series_id]
        if task is None or task.path != path:
            if task is not None:
                yield task
            task = SourceFile(path, str(root / path), sha256, uid, series_number, method, job.model.name)
        place = frame_slices[frame] if frame_slices and frame < len(frame_slices) else index
        number_in_series = (place or 0) + 1
        task.slices.append(SliceTask(frame, frames is not None, str(output_dir / heatmap), number_in_series,
                                     str(folder / f"series-{position:03d}" / f"IM{number_in_series:05d}.dcm")))
    if task is not None:
        yield task


def write_source(task: SourceFile) -> tuple[int, list[tuple[int | None, str]]]:
    """Write the SC images of one source file; return how many, and the frames skipped with why."""
    import pydicom

    from pipeline.io.npz import load_arrays
    from pipeline.io.overlays import source_frames

    try:
        pixels = source_frames(task.source, task.sha256)
        header = pydicom.dcmread(task.source, stop_before_pixels=True, force=True)
    except Exception as exc:  # gone, changed or unreadable: every slice of the file is told
        reason = str(exc) or type(exc).__name__
        return 0, [(s.frame if s.multi_frame else None, reason) for s in task.slices]
    written, problems = 0, []
    for item in task.slices:
        if item.frame not in pixels:
            problems.append((item.frame if item.multi_frame else None,
                             f"the scan file has no frame {item.frame} any more"))
            continue
        try:
            overlay = overlay_pixels(pixels[item.frame], load_arrays(item.heatmap)["cam"])
            image = sc_image(header, overlay, task, item)
            Path(item.target).parent.mkdir(parents=True, exist_ok=True)
            image.save_as(item.target, enforce_file_format=True)
        except Exception as exc:  # told without its message, which may quote the patient's values
            problems.append((item.frame if item.multi_frame else None,
                             f"its DICOM image could not be made ({type(exc).__name__})"))
            continue
        written += 1
    return written, problems


def overlay_pixels(scan, cam):
    """Return the (H, W, 3) uint8 overlay: the pixels of ``pipeline.io.overlays.overlay_png``."""
    from pipeline.io.heatmaps import as_map, upsample
    from pipeline.io.overlays import render_overlay

    height, width = scan.shape[:2]
    return render_overlay(scan, upsample(as_map(cam), (width, height)))


def sc_image(header, overlay, task: SourceFile, item: SliceTask):
    """Return the Secondary Capture of one overlay, patient and study taken from its source."""
    from highdicom import UID
    from highdicom.content import ReferencedImageSequence
    from highdicom.sc import SCImage
    from pydicom.uid import ExplicitVRLittleEndian

    from pipeline.io.dicom_header import as_vector, header_value

    orientation = as_vector(header_value(header, "ImageOrientationPatient"), 6)
    spacing = as_vector(header_value(header, "PixelSpacing"), 2)
    description = f"tumorlens {task.method} of {header.get('SeriesDescription') or 'series'}"
    body_part = header_value(header, "BodyPartExamined")
    laterality = header_value(header, "Laterality") or header_value(header, "ImageLaterality")
    with warnings.catch_warnings():  # highdicom's warnings quote names: nothing identifying leaves
        warnings.simplefilter("ignore")
        image = SCImage.from_ref_dataset(
            header, overlay, "RGB", 8, "PATIENT", task.series_uid, task.series_number, str(UID()),
            item.instance_number, MANUFACTURER, pixel_spacing=spacing,
            patient_orientation=patient_orientation(orientation) or ("L", "P"),
            laterality=laterality if laterality in ("L", "R") else None,
            transfer_syntax_uid=ExplicitVRLittleEndian, series_description=description[:DESCRIPTION_CHARS],
            manufacturer_model_name=task.model[:DESCRIPTION_CHARS])
    if orientation is None:  # Type 2: empty when the source does not say how the rows run
        image.PatientOrientation = None
    if body_part:  # the source's: it tells whether Laterality (Type 2C) is wanted
        image.BodyPartExamined = str(body_part)
    elif image.get("Laterality") is None:  # Type 2C, and whether it is wanted is not known
        image.Laterality = None
    image.ReferencedImageSequence = ReferencedImageSequence(
        [header], referenced_frame_number=item.frame + 1 if item.multi_frame else None)
    image.BurnedInAnnotation = "NO"
    return image


def patient_orientation(orientation: tuple[float, ...] | None) -> tuple[str, str] | None:
    """Return the patient direction (one letter each) of an image's rows and columns, or None."""
    if orientation is None:
        return None
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    found = []
    for vector in (orientation[:3], orientation[3:]):
        axis = max(range(3), key=lambda i: abs(vector[i]))
        found.append(letters[axis][0 if vector[axis] > 0 else 1])
    return found[0], found[1]


def export_dicom(session: Session, job_id: int, output_dir: str | Path, folder: str | Path,
                 processes: int | None = None) -> DicomWritten:
    """Write the SC overlays of job ``job_id``'s analysed series under ``folder``; say what was done."""
    output_dir, folder = Path(output_dir), Path(folder)
    tasks = list(source_files(session, job_id, output_dir, folder))
    processes = min(processes or os.cpu_count() or 1, max(1, len(tasks)))
    done = DicomWritten()
    series_written: set[str] = set()
    with contextlib.ExitStack() as stack:
        run = map if processes == 1 else functools.partial(
            stack.enter_context(ProcessPoolExecutor(processes)).map, chunksize=4)
        for task, (written, problems) in zip(tasks, run(_safely, tasks)):
            done.images += written
            if written:
                series_written.add(task.series_uid)
            done.skipped += [(task.path, frame, reason) for frame, reason in problems]
    done.series = len(series_written)
    return done


def _safely(task: SourceFile) -> tuple[int, list[tuple[int | None, str]]]:
    try:
        with warnings.catch_warnings():  # pydicom's and highdicom's quote values: none may leave
            warnings.simplefilter("ignore")
            return write_source(task)
    except Exception as exc:  # one file's fault is told (its message may quote values); the others written
        reason = f"its DICOM images could not be made ({type(exc).__name__})"
        return 0, [(s.frame if s.multi_frame else None, reason) for s in task.slices]
