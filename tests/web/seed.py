"""Builders that put jobs, scans and results straight into a store, for web tests and benchmarks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from worker.models import Job, JobStatus, NeuronStats, Result, Scan, ScanStatus
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


def _attention(gray) -> "np.ndarray":
    """Return a 12x12 map that is hottest on the brightest part of the scan (a stand-in CAM)."""
    import numpy as np
    from PIL import Image

    small = np.asarray(Image.fromarray(gray).resize((12, 12), Image.Resampling.BOX), np.float32)
    small = np.clip(small - np.percentile(small, 80), 0, None)
    return small / small.max() if small.max() > 0 else small


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
