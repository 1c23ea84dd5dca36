"""Stage 4: write each analysed scan's outputs, or link an earlier job's, and build its result rows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.explain.overlay import replace_file, write_outputs
from pipeline.io.npz import load_arrays
from pipeline.io.overlays import overlay_png
from pipeline.io.scans import Scan as Image
from pipeline.io.scans import read_scan
from worker.batch.items import OUTPUT_SUFFIXES, Item, Work, guarded
from worker.models import Result, utcnow


def write(work: Work) -> Work:
    """Write thumbnails and heatmaps (and overlays in an eager job), or link the reused ones; build
    the result rows. A row's overlay path is where the overlay is, or will be when rendered."""
    for item in work.items if work.job_error is None else ():
        if item.error is None and item.reuse is not None:
            guarded(item, _link_reused, item, work)
        elif item.error is None:
            guarded(item, _write_item, item, work)
    return work


def output_stem(work: Work, item: Item, frame: int | None) -> Path:
    """Return where a frame's outputs go: ``<output>/jobs/<job>/<scan path>[.f<frame>]``."""
    name = item.path if frame is None else f"{item.path}.f{frame:04d}"
    return work.output_dir / "jobs" / str(work.job_id) / name


def _write_item(item: Item, work: Work) -> None:
    rows = []
    for analysis in item.analyses:
        image = item.images[analysis["frame"]]
        stem = output_stem(work, item, image.frame)
        outputs = write_outputs(stem, image.pixels, analysis["cam"],  # creates the folders
                                overlay=work.eager_overlays)
        rows.append(_row(item, work, image, analysis, outputs))
    item.rows, item.images = rows, []


def _row(item: Item, work: Work, image: Image, analysis: dict, outputs) -> dict:
    height, width = image.pixels.shape[:2]
    paths = {kind: Path(getattr(outputs, kind)).relative_to(work.output_dir).as_posix()
             for kind in OUTPUT_SUFFIXES}
    return {"scan_id": item.scan_id, "job_id": work.job_id, "frame": image.frame or 0,
            "width": width, "height": height, "predicted_class": analysis["predicted_class"],
            "tumor_probability": analysis["tumor_probability"], "ood_score": analysis["ood_score"],
            "probabilities": analysis["probabilities"], "method": work.method,
            "peak_x": int(outputs.peak[0]), "peak_y": int(outputs.peak[1]), **paths,
            "image_info": image.info, "created_at": utcnow()}


def _link_reused(item: Item, work: Work) -> None:
    rows, frames = [], None
    for result in item.reuse:
        stem = output_stem(work, item, result.frame if item.multi_frame else None)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = {kind: _link(work.output_dir / getattr(result, kind), stem.with_name(stem.name + suffix))
                 .relative_to(work.output_dir).as_posix()
                 for kind, suffix in OUTPUT_SUFFIXES.items()}
        overlay = work.output_dir / paths["overlay"]
        if work.eager_overlays and not overlay.is_file():  # that job left it on demand: draw it
            frames = frames or {scan.frame or 0: scan.pixels for scan in read_scan(work.root / item.path)}
            _render(frames[result.frame], work.output_dir / result.heatmap, overlay)
        rows.append({**_result_fields(result), "scan_id": item.scan_id, "job_id": work.job_id,
                     **paths})
    item.rows = rows


def _link(source: Path, target: Path) -> Path:
    """Hard-link (or copy) an earlier job's output to ``target``; an overlay that job left to be
    rendered on demand is left so here too."""
    target.unlink(missing_ok=True)
    if source.suffix == ".png" and not source.is_file():
        return target
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copyfile(source, target)
    return target


def _render(pixels: np.ndarray, heatmap: Path, target: Path) -> None:
    """Draw an overlay from its scan's pixels and stored map, the bytes an eager job writes."""
    replace_file(target, overlay_png(pixels, load_arrays(heatmap)["cam"]))


def _result_fields(result: Result) -> dict:
    skip = {"id", "scan_id", "job_id"}
    return {c.key: getattr(result, c.key) for c in Result.__table__.columns if c.key not in skip}
