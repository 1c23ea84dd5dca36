"""Stages 2 and 3: decode each scan into model inputs, then run the model over the batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io.scans import read_scan
from worker.batch.items import Item, Work, guarded, log, raise_if_out_of_time
from worker.settings import get_settings


def decode(work: Work, analyzer) -> Work:
    """Read each scan to analyse and prepare its model inputs; failures stay with their scan."""
    for item in work.items:
        if item.to_analyse:
            guarded(item, _decode_item, item, work.root, analyzer)
    return work


def _decode_item(item: Item, root: Path, analyzer) -> None:
    item.images = read_scan(root / item.path)
    item.multi_frame = item.images[0].frame is not None
    item.inputs = [analyzer.prepare(image.pixels) for image in item.images]


def analyse(work: Work, analyzer, chunk_size: int | None = None) -> Work:
    """Run the model over every prepared frame, ``chunk_size`` frames per pass."""
    chunk_size = chunk_size or get_settings().batch_size
    frames = [(item, i) for item in work.items if item.to_analyse for i in range(len(item.inputs))]
    for start in range(0, len(frames), chunk_size):
        chunk = frames[start:start + chunk_size]
        try:
            _analyse_frames(chunk, analyzer)
        except Exception as exc:
            raise_if_out_of_time(exc)
            if _is_model_error(exc):
                work.job_error = f"the model cannot be analysed: {exc}"
                break
            log.warning("a batch pass failed; analysing its scans one by one", exc_info=True)
            for item in dict.fromkeys(item for item, _ in chunk):
                guarded(item, _analyse_frames, [(x, i) for x, i in chunk if x is item], analyzer)
    for item in work.items:
        item.inputs = []  # the pass is done: free the model inputs
    return work


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
            "ood_score": None if result.ood_score is None else _rounded(result.ood_score[row]),
        })


def _rounded(value) -> float:
    return round(float(value), 6)  # float32 carries ~7 digits; more would be noise in exports
