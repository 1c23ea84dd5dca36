"""The operating point: the threshold ``train`` chooses on VALIDATION for a stated sensitivity.

The highest threshold whose VALIDATION sensitivity still reaches the target keeps as much
specificity as that target allows. It is written into ``model.json`` (``threshold``), and
scan, export, the report and evaluate all call a scan tumor from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data import datasets
from pipeline.model.preprocess import PREPROCESS

LOWEST = 1e-6  # model.json's threshold lies strictly between 0 and 1
HIGHEST = 1 - 1e-6


def choose_threshold(labels: Sequence[int], tumor_probability: Sequence[float],
                     target_sensitivity: float) -> dict:
    """Return the highest threshold whose sensitivity on these scans reaches the target.

    Args:
        labels: 0/1 ground truth (1 = tumor).
        tumor_probability: the model's P(tumor) of each scan.
        target_sensitivity: the share of tumor scans that must be called tumor, in (0, 1].

    Returns:
        ``threshold`` with the ``sensitivity`` and ``specificity`` it gives here, the target and
        the counts.

    Raises:
        ValueError: no tumor scan to choose on, or a target outside (0, 1].
    """
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"the target sensitivity must lie in (0, 1], not {target_sensitivity}")
    labels = np.asarray(labels)
    probability = np.asarray(tumor_probability, dtype=np.float64)
    positives = np.sort(probability[labels == 1])[::-1]
    if not len(positives):
        raise ValueError("no tumor scan to choose a threshold on")
    needed = math.ceil(target_sensitivity * len(positives) - 1e-9)
    threshold = float(np.clip(positives[needed - 1], LOWEST, HIGHEST))
    called = probability >= threshold
    negatives = labels == 0
    return {"threshold": threshold, "target_sensitivity": target_sensitivity,
            "sensitivity": float(called[labels == 1].mean()),
            "specificity": float((~called[negatives]).mean()) if negatives.any() else None,
            "tumor_scans": int(len(positives)), "scans": int(len(labels))}


def analyse_split(analyzer, folders: Sequence[Path], split: str,
                  batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (labels, P(tumor), pooled neuron vectors) of every folder's ``split`` scans.

    Args:
        analyzer: a ``pipeline.explain.analysis.Analyzer`` of the model; one serves every split.
        folders: prepared folders (TRAIN/VALIDATION/TEST).
        split: which split of each.
        batch_size: scans per analysis pass.

    Returns:
        int32 (N,), float32 (N,) and float32 (N, C).
    """
    spec = analyzer.spec
    examples = [e for folder in folders for e in datasets.find_split(folder, split)]
    images, labels = datasets.load_arrays(examples, spec.input_size, spec.color_mode)
    prepare = PREPROCESS[spec.preprocessing]  # the images are at the input size already
    results = [analyzer.analyze(prepare(images[i:i + batch_size].astype(np.float32)))
               for i in range(0, len(images), batch_size)]
    if not results:
        raise datasets.DataError(f"no {split} scans in {', '.join(map(str, folders))}")
    return (labels, np.concatenate([r.tumor_probability for r in results]),
            np.concatenate([r.neurons for r in results]))
