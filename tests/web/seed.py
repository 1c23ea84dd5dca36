"""Builders that put jobs, scans and results straight into a store, for web tests and benchmarks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from worker.models import Job, JobStatus, NeuronStats, Result, Scan, ScanStatus, Series
from worker.store import create_user, model_for_spec

CLASSES = ["no_tumor", "tumor"]


def write_model(folder: Path, name: str = "test-model") -> Path:
    """Write a model.json over a placeholder weights file (the web never loads the model)."""
    from pipeline.model.spec import write_spec

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.keras").write_bytes(b"weights of " + name.encode())
    return write_spec({"name": name, "file": "model.keras", "input_size": [48, 48],
                       "color_mode": "rgb", "preprocessing": "unit", "class_names": CLASSES,
                       "positive_classes": ["tumor"], "output": "probabilities"}, folder)


def add_user(session: Session, username: str = "alice", password: str = "correct horse") -> int:
    """Record a user and commit; return its id."""
    user = create_user(session, username, password)
    session.commit()
    return user.id


def add_job(session: Session, root: Path, spec_path: Path, status: JobStatus = JobStatus.DONE,
            method: str = "gradcam", card: dict | None = None) -> Job:
    """Record a job over ``root`` with the model at ``spec_path`` (started a minute ago)."""
    from pipeline.model.spec import load_spec

    model = model_for_spec(session, load_spec(spec_path))
    if card is not None:
        model.card = card
    now = dt.datetime.now(dt.timezone.utc)
    finished = status in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED)
    job = Job(root=str(root), model=model, method=method, status=status, label_source="predicted",
              started_at=now - dt.timedelta(minutes=1), finished_at=now if finished else None)
    session.add(job)
    session.flush()
    return job


def seeded_job(session: Session, folders: dict[str, Path], rows: list["Row"]) -> Job:
    """Record a done job over the test folders with ``rows``, commit, and return it."""
    job = add_job(session, folders["scans"], folders["model"] / "model.json")
    add_rows(session, job, rows)
    session.commit()
    return job


@dataclass
class Row:
    """One scan to seed; ``probability`` None means no result (failed, pending or duplicate).

    ``ood_score``: the result's distance from the model's training data over its limit (None: not
    measured).
    """

    path: str
    probability: float | None = None
    status: ScanStatus = ScanStatus.DONE
    error: str | None = None
    artifacts: str = "a"  # stem of the overlay/thumbnail/heatmap files under the output folder
    peak: tuple[int, int] | None = None
    ood_score: float | None = None


def add_rows(session: Session, job: Job, rows: list[Row], width: int = 64, height: int = 64) -> list[int]:
    """Bulk-insert scans (and results for rows with a probability); return the scan ids in order."""
    session.execute(insert(Scan), [
        {"job_id": job.id, "path": r.path, "status": r.status, "error": r.error,
         "sha256": _sha256(Path(job.root) / r.path, i), "attempts": 1} for i, r in enumerate(rows)])
    ids = dict(session.execute(select(Scan.path, Scan.id).where(Scan.job_id == job.id)).all())
    results = [_result(job, ids[r.path], r, width, height) for r in rows if r.probability is not None]
    if results:
        session.execute(insert(Result), results)
    session.flush()
    return [ids[r.path] for r in rows]


def _sha256(path: Path, i: int) -> str:
    """Return the file's real hash, as a walk records it, or a distinct stand-in if it is absent."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else f"{i:064x}"


def _result(job: Job, scan_id: int, row: Row, width: int, height: int) -> dict:
    p = row.probability
    return {"scan_id": scan_id, "job_id": job.id, "frame": 0, "width": width, "height": height,
            "predicted_class": "tumor" if p >= 0.5 else "no_tumor", "tumor_probability": p,
            "probabilities": {"no_tumor": 1 - p, "tumor": p}, "method": job.method,
            "peak_x": (row.peak or (width // 3, height // 4))[0],
            "peak_y": (row.peak or (width // 3, height // 4))[1],
            "overlay": f"{row.artifacts}.overlay.png", "thumbnail": f"{row.artifacts}.thumb.jpg",
            "heatmap": f"{row.artifacts}.heatmap.npz",
            "image_info": {"format": "PNG", "rows": str(height), "columns": str(width)},
            "ood_score": row.ood_score}


def add_neuron_stats(session: Session, job: Job, correlations: list[float]) -> None:
    """Record job-level neuron statistics with the given per-neuron correlations."""
    import numpy as np

    values = np.asarray(correlations, dtype=np.float32)
    session.add(NeuronStats(job_id=job.id, label_source="predicted", n_scans=10,
                            n_neurons=len(values), summary={"seeded": True},
                            correlations=values.tobytes()))
    session.flush()


def add_analysed(session: Session, job: Job, outputs: Path, rows: list[tuple[str, float]],
                 size: tuple[int, int] = (96, 96), seed: int = 0,
                 ood_scores: dict[str, float] | None = None) -> list[int]:
    """Write synthetic scans under the job root with real overlay artifacts, and record them.

    ``ood_scores`` gives some paths a distance from the training data (the others: not measured).
    """
    import numpy as np
    from PIL import Image

    from pipeline.explain.overlay import write_outputs
    from tests.builders.scans import synthetic_slice

    rng = np.random.default_rng(seed)
    recorded = []
    for path, probability in rows:
        gray = synthetic_slice(rng, size)
        target = Path(job.root) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray).save(target, format="PNG")
        stem = f"job{job.id}/{len(recorded):04d}"
        written = write_outputs(outputs / stem, gray, _attention(gray))
        recorded.append(Row(path, probability, artifacts=stem, peak=written.peak,
                            ood_score=(ood_scores or {}).get(path)))
    return add_rows(session, job, recorded, *size)


def _attention(gray):
    """Return a 12x12 map that is hottest on the brightest part of the scan (a stand-in CAM)."""
    import numpy as np
    from PIL import Image

    small = np.asarray(Image.fromarray(gray).resize((12, 12), Image.Resampling.BOX), np.float32)
    small = np.clip(small - np.percentile(small, 80), 0, None)
    return small / small.max() if small.max() > 0 else small


UID_KEY = b"seeded installation secret, 32b+"  # the keyed hash's key (pipeline.io.series.uid_key)


@dataclass
class SeriesSeed:
    """One DICOM series to seed, its slices given in anatomical order.

    ``probabilities[i]`` is slice i's tumor probability (None: a slice that failed). The files are
    met, and so get their scan ids and names, in ``walk_order`` (slice indexes; default: the
    anatomical order reversed), so neither id nor path order is the anatomical one. ``reason``
    set: skipped by its tags, its scans ``skipped`` with that reason, no results. ``multiframe``:
    one file holding every slice, frame i at slice ``walk_order[i]``.
    """

    uid: str  # the raw SeriesInstanceUID: only its keyed hash reaches the store
    study_uid: str
    probabilities: list[float | None]
    number: int | None = 1
    description: str | None = "AX T1 SE"
    modality: str | None = "MR"
    body_part: str | None = "HEAD"
    orientation: str = "axial"
    sequence: str = "T1"
    sequence_because: str = "RepetitionTime 500 ms, EchoTime 12 ms → T1"
    reason: str | None = None
    walk_order: list[int] | None = None
    multiframe: bool = False
    ood: dict[int, float] = field(default_factory=dict)  # slice index -> ood_score


@dataclass
class SeededSeries:
    id: int
    key: str
    study_key: str
    slices: list[tuple[int, int]]  # (scan id, frame) of each slice, in anatomical order


def add_series(session: Session, job: Job, spec: SeriesSeed, outputs: Path | None = None,
               threshold: float = 0.5) -> SeededSeries:
    """Record a series with its slices (and their results) as a finished job leaves them.

    With ``outputs``, each analysed slice gets real thumbnail and heatmap files there, its slice
    number (from 1) drawn into it, so a strip shows its order.
    """
    from pipeline.io.series import uid_key

    key, study_key = uid_key(spec.uid, UID_KEY), uid_key(spec.study_uid, UID_KEY)
    n = len(spec.probabilities)
    order = spec.walk_order if spec.walk_order is not None else list(range(n))[::-1]
    series = Series(job_id=job.id, key=key, study_key=study_key, slice_count=n, spacing_mm=5.0,
                    spacing_from="positions", analysed=spec.reason is None, reason=spec.reason,
                    **{k: getattr(spec, k) for k in ("number", "modality", "body_part", "description",
                                                     "orientation", "sequence", "sequence_because")},
                    **_series_result(spec, threshold))
    session.add(series)
    session.flush()
    folder = f"DICOM/{series.id:04d}"
    slices = _multiframe_scan(session, job, series, spec, order, folder) if spec.multiframe else \
        _slice_scans(session, job, series, spec, order, folder)
    results = [_slice_result(job, scan_id, frame, spec, index, outputs)
               for index, (scan_id, frame) in enumerate(slices)
               if spec.reason is None and spec.probabilities[index] is not None]
    if results:
        session.execute(insert(Result), results)
    session.flush()
    return SeededSeries(series.id, key, study_key, slices)


def _series_result(spec: SeriesSeed, threshold: float) -> dict:
    values = [0.0 if spec.ood.get(i, 0) > 1 else p for i, p in enumerate(spec.probabilities)
              if p is not None]
    if spec.reason is not None or not values:
        return {"tumor_probability": None, "result": None}
    top = sorted(values, reverse=True)[:3]
    runs, start = [], None
    for i, p in enumerate([*spec.probabilities, None]):
        called = p is not None and spec.ood.get(i, 0) <= 1 and p >= threshold
        if called and start is None:
            start = i
        elif not called and start is not None:
            runs.append([start, i - 1])
            start = None
    evidence = [-1.0 if p is None else 0.0 if spec.ood.get(i, 0) > 1 else p
                for i, p in enumerate(spec.probabilities)]
    strongest = max(range(len(evidence)), key=evidence.__getitem__)
    return {"tumor_probability": sum(top) / len(top),
            "result": {"aggregation": "top-k-mean", "k": 3, "threshold": threshold,
                       "strongest_slice": {"index": strongest}, "tumor_slices": runs}}


def _status(spec: SeriesSeed, index: int) -> dict:
    if spec.reason is not None:
        return {"status": ScanStatus.SKIPPED, "error": spec.reason}
    if spec.probabilities[index] is None:
        return {"status": ScanStatus.FAILED, "error": "truncated DICOM: the file ends early"}
    return {"status": ScanStatus.DONE, "error": None}


def _slice_scans(session, job, series, spec, order, folder) -> list[tuple[int, int]]:
    rows = [{"job_id": job.id, "path": f"{folder}/IM{j + 1:04d}", "sha256": f"{series.id:032x}{j:032x}",
             "attempts": 1, "series_id": series.id, "slice_index": index,
             "position_mm": 10.0 + 5 * index, "instance": j + 1, **_status(spec, index)}
            for j, index in enumerate(order)]
    session.execute(insert(Scan), rows)
    ids = dict(session.execute(select(Scan.slice_index, Scan.id).where(Scan.series_id == series.id)).all())
    return [(ids[index], 0) for index in range(len(order))]


def _multiframe_scan(session, job, series, spec, order, folder) -> list[tuple[int, int]]:
    status = _status(spec, 0) if spec.reason else {"status": ScanStatus.DONE, "error": None}
    scan = Scan(job_id=job.id, path=f"{folder}/MF.dcm", sha256=f"{series.id:064x}", attempts=1,
                frames=len(order), series_id=series.id, slice_index=min(order), frame_slices=list(order),
                frame_positions=[10.0 + 5 * i for i in order], instance=1, **status)
    session.add(scan)
    session.flush()
    frame_of = {index: frame for frame, index in enumerate(order)}
    return [(scan.id, frame_of[index]) for index in range(len(order))]


def _slice_result(job, scan_id, frame, spec, index, outputs) -> dict:
    row = Row("", spec.probabilities[index], artifacts="a", ood_score=spec.ood.get(index))
    if outputs is not None:
        row.artifacts = f"job{job.id}/s{scan_id}_{frame}"
        row.peak = write_outputs_numbered(outputs / row.artifacts, index + 1, seed=scan_id + frame)
    return {**_result(job, scan_id, row, 96, 96), "frame": frame}


def write_outputs_numbered(stem: Path, number: int, seed: int = 0) -> tuple[int, int]:
    """Write a synthetic slice's thumbnail and heatmap with ``number`` drawn large; return the peak."""
    import numpy as np
    from PIL import Image, ImageDraw

    from pipeline.explain.overlay import write_outputs
    from tests.builders.scans import synthetic_slice

    plain = synthetic_slice(np.random.default_rng(seed), (96, 96))
    image = Image.fromarray(plain)
    ImageDraw.Draw(image).text((6, 4), str(number), fill=255, font_size=30)
    return write_outputs(stem, np.asarray(image), _attention(plain)).peak  # the map ignores the digits


def png(size: int = 8) -> bytes:
    """Return a small gray PNG."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    """Return a zip archive holding ``entries`` (name -> bytes), names written as given."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()
