"""Classification, localisation and faithfulness metrics on plain arrays.

Conventions: label 1 = tumor; heatmaps and masks share one (height, width); points are (x, y).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

POINTING_TOLERANCE = 15  # pixels, as in TorchRay's pointing-game benchmark
ECE_BINS = 15


def expected_calibration_error(labels: np.ndarray, tumor_probability: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Return the expected calibration error of the predicted class's confidence.

    Args:
        labels: (N,) 0/1 ground truth.
        tumor_probability: (N,) predicted probability of class 1.
        bins: equal-width confidence bins over [0, 1].

    Returns:
        The bin-size-weighted mean gap between confidence and accuracy.
    """
    labels = np.asarray(labels)
    probability = np.asarray(tumor_probability, dtype=np.float64)
    predicted = (probability >= 0.5).astype(int)
    confidence = np.where(predicted == 1, probability, 1.0 - probability)
    correct = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gaps = [abs(confidence[which == b].mean() - correct[which == b].mean()) * np.mean(which == b)
            for b in range(bins) if np.any(which == b)]
    return float(np.sum(gaps))


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def classification_metrics(labels: Sequence[int], tumor_probability: Sequence[float],
                           threshold: float = 0.5) -> dict:
    """Return accuracy, sensitivity, specificity, ROC AUC, confusion matrix and ECE.

    Args:
        labels: 0/1 ground truth (1 = tumor).
        tumor_probability: predicted tumor probabilities.
        threshold: the probability at or above which a scan is called tumor.

    Returns:
        A JSON-ready dict; a rate whose denominator is empty is None, and so is the AUC when
        only one class is present. ``confusion_matrix`` is [[TN, FP], [FN, TP]].
    """
    labels = np.asarray(labels, dtype=int)
    probability = np.asarray(tumor_probability, dtype=np.float64)
    if labels.size == 0:
        raise ValueError("no scans to measure: the label list is empty")
    predicted = (probability >= threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1])
    both = len(np.unique(labels)) == 2
    return {
        "n": int(labels.size),
        "accuracy": float(np.mean(predicted == labels)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "roc_auc": float(roc_auc_score(labels, probability)) if both else None,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "ece": expected_calibration_error(labels, probability),
    }


BOOTSTRAP_ROUNDS = 2000


def bootstrap_intervals(labels: Sequence[int], tumor_probability: Sequence[float],
                        groups: Sequence[str] | None = None, level: float = 0.95,
                        rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, threshold: float = 0.5) -> dict:
    """Return percentile-bootstrap confidence intervals of accuracy, sensitivity, specificity, AUC.

    When ``groups`` is given, whole groups are drawn with replacement (a cluster bootstrap): scans of
    one near-duplicate group or one patient are not independent, and drawing them one by one gives
    intervals that are too narrow. Without groups every scan is its own.

    Args:
        labels: 0/1 ground truth (1 = tumor).
        tumor_probability: predicted tumor probabilities.
        groups: one group name per scan, or None.
        level: coverage of each interval.
        rounds: bootstrap resamples.
        seed: seeds the resampling, so the same inputs give the same intervals.
        threshold: the probability at or above which a scan is called tumor.

    Returns:
        A JSON-ready dict: ``level``, ``rounds``, ``clusters`` (groups drawn from) and, per metric,
        ``[low, high]`` (None when no resample had the scans it needs, e.g. no tumor scans).
    """
    labels = np.asarray(labels, dtype=np.float64)
    probability = np.asarray(tumor_probability, dtype=np.float64)
    if labels.size == 0 or labels.shape != probability.shape:
        raise ValueError("need one probability per label, and at least one scan")
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, not {level}")
    codes = (np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1] if groups is not None
             else np.arange(labels.size))
    if codes.shape != labels.shape:
        raise ValueError("need one group per scan")
    clusters = int(codes.max()) + 1
    draws = np.random.default_rng(seed).integers(0, clusters, (rounds, clusters))
    counts = np.zeros((rounds, clusters))
    np.add.at(counts, (np.arange(rounds)[:, None], draws), 1.0)
    weights = counts[:, codes]  # (rounds, scans): how often each scan was drawn
    correct = ((probability >= threshold) == labels.astype(bool)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "accuracy": weights @ correct / weights.sum(axis=1),
            "sensitivity": weights @ (correct * labels) / (weights @ labels),
            "specificity": weights @ (correct * (1 - labels)) / (weights @ (1 - labels)),
            "roc_auc": _weighted_auc(labels, probability, weights),
        }
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, samples in values.items():
        finite = samples[np.isfinite(samples)]
        intervals[name] = ([float(v) for v in np.percentile(finite, [tail, 100 - tail])]
                           if finite.size else None)
    return {"level": level, "rounds": rounds, "clusters": clusters, **intervals}


def errors_by_group(labels: Sequence[int], tumor_probability: Sequence[float], groups: Sequence[str],
                    paths: Sequence[str], threshold: float = 0.5) -> dict:
    """Return the misclassified scans gathered by near-duplicate group or case, most errors first.

    A handful of groups can carry most of a split's errors (copies of one scan err together), and
    then the point estimate says less than it seems; this shows where to look.

    Args:
        labels: 0/1 ground truth (1 = tumor).
        tumor_probability: predicted tumor probabilities.
        groups: one group name per scan.
        paths: one path per scan, as it should be reported.
        threshold: the probability at or above which a scan is called tumor.

    Returns:
        A JSON-ready dict: ``scans`` (misclassified), ``groups`` (groups with an error),
        ``of_groups`` (groups in all) and ``by_group``: per group with an error, ``group``,
        ``wrong``, ``scans`` (the group's size), ``label`` ("tumor", "no tumor" or "mixed") and the
        misclassified ``paths``; ordered by errors, then by name.
    """
    labels = np.asarray(labels).astype(bool)
    wrong = (np.asarray(tumor_probability, dtype=np.float64) >= threshold) != labels
    if not len(labels) == len(wrong) == len(groups) == len(paths):
        raise ValueError("need one probability, group and path per label")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(str(group), []).append(index)
    by_group = []
    for group, indices in members.items():
        missed = [i for i in indices if wrong[i]]
        if missed:
            kinds = {bool(labels[i]) for i in indices}
            label = "mixed" if len(kinds) > 1 else ("tumor" if kinds.pop() else "no tumor")
            by_group.append({"group": group, "wrong": len(missed), "scans": len(indices), "label": label,
                             "paths": [str(paths[i]) for i in missed]})
    by_group.sort(key=lambda g: (-g["wrong"], g["group"]))
    return {"scans": int(wrong.sum()), "groups": len(by_group), "of_groups": len(members),
            "by_group": by_group}


# Tumor size as a share of the image: below 0.25 %, to 1 %, to 4 %, above. A 256 x 256 FLAIR slice
# at a tumor's edge shows a few hundred pixels of it (< 1 %); a slice through its middle, several %.
SIZE_EDGES = (0.0025, 0.01, 0.04)


def sensitivity_by_size(shares: Sequence[float], tumor_probability: Sequence[float],
                        edges: Sequence[float] = SIZE_EDGES, threshold: float = 0.5) -> list[dict]:
    """Return the sensitivity on outlined tumor scans, by how much of the image the tumor covers.

    One number for every tumor scan hides that a slice through a tumor's edge is a harder call
    than one through its middle; the bins show where the misses are.

    Args:
        shares: per tumor scan, the outlined region's share of the image (0-1).
        tumor_probability: per tumor scan, the predicted tumor probability.
        edges: increasing bin edges between 0 and 1.
        threshold: the probability at or above which a scan is called tumor.

    Returns:
        One dict per bin: ``from`` and ``to`` (shares; ``to`` is None for the last, open bin),
        ``n`` and ``sensitivity`` (None for an empty bin).
    """
    shares = np.asarray(shares, dtype=np.float64)
    called = np.asarray(tumor_probability, dtype=np.float64) >= threshold
    if shares.shape != called.shape:
        raise ValueError("need one probability per tumor share")
    bounds = [0.0, *edges, None]
    bins = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        inside = (shares >= low) & (shares < high if high is not None else True)
        n = int(inside.sum())
        bins.append({"from": low, "to": high, "n": n,
                     "sensitivity": float(called[inside].mean()) if n else None})
    return bins


def _weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return each row's ROC AUC with those sample weights (ties count half; NaN without both classes)."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # one block per tied score
    positive = np.add.reduceat(weights[:, order] * labels[order], starts, axis=1)
    negative = np.add.reduceat(weights[:, order] * (1 - labels[order]), starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative  # negatives scored strictly lower
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (positive * (below + negative / 2)).sum(axis=1) / pairs, np.nan)


def pointing_hit(point: tuple[int, int], mask: np.ndarray,
                 tolerance: int = POINTING_TOLERANCE) -> bool:
    """Tell whether any mask pixel lies within ``tolerance`` pixels of ``point`` (x, y)."""
    x, y = point
    height, width = mask.shape
    top, left = max(y - tolerance, 0), max(x - tolerance, 0)
    window = mask[top:min(y + tolerance + 1, height), left:min(x + tolerance + 1, width)]
    rows, cols = np.nonzero(window)
    return bool(np.any((rows + top - y) ** 2 + (cols + left - x) ** 2 <= tolerance ** 2))


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Return the share of the heatmap's (non-negative) energy that falls inside the mask."""
    energy = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = energy.sum()
    return float(energy[mask].sum() / total) if total > 0 else 0.0


def heatmap_iou(heatmap: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """Return the IoU of the mask and the heatmap thresholded at ``threshold`` x its maximum."""
    top = float(np.max(heatmap))
    if top <= 0:
        return 0.0
    region = heatmap >= threshold * top
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


def argmax_point(heatmap: np.ndarray) -> tuple[int, int]:
    """Return the (x, y) of a heatmap's maximum (the first one in row-major order)."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def centre_map(shape: tuple[int, int]) -> np.ndarray:
    """Return the centre baseline: a Gaussian peaking at the image centre (sigma = side / 4)."""
    height, width = shape
    ys = (np.arange(height) - (height - 1) / 2) / (height / 4)
    xs = (np.arange(width) - (width - 1) / 2) / (width / 4)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)).astype(np.float32)


def localisation_scores(heatmap: np.ndarray, mask: np.ndarray, point: tuple[int, int] | None = None,
                        tolerance: int = POINTING_TOLERANCE) -> dict[str, float]:
    """Score one heatmap against one region mask of the same size.

    Args:
        heatmap: (H, W) non-negative map.
        mask: (H, W) boolean region.
        point: the heatmap's peak (x, y); computed with ``argmax_point`` when omitted.
        tolerance: pointing-game tolerance in pixels.

    Returns:
        ``pointing`` (1.0 hit / 0.0 miss), ``energy`` and ``iou``.
    """
    mask = np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ in size")
    point = argmax_point(heatmap) if point is None else point
    return {"pointing": float(pointing_hit(point, mask, tolerance)),
            "energy": energy_inside(heatmap, mask), "iou": heatmap_iou(heatmap, mask)}


def summarise(scores: Sequence[dict[str, float]]) -> dict[str, float | int]:
    """Average per-image score dicts into one dict with the image count ``n``."""
    if not scores:
        return {"n": 0}
    return {"n": len(scores), **{key: float(np.mean([s[key] for s in scores])) for key in scores[0]}}


def _perturbation_curves(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                         start: np.ndarray, end: np.ndarray, order: np.ndarray,
                         steps: int) -> np.ndarray:
    """Return the score along a path from ``start`` to ``end`` that swaps pixels in ``order``."""
    height, width = image.shape[:2]
    counts = np.linspace(0, order.size, steps + 1).astype(int)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    swapped = (rank[None, :] < counts[:, None]).reshape(steps + 1, height, width, 1)
    return predict(np.where(swapped, end[None], start[None]))


def deletion_insertion(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                       saliency: np.ndarray, steps: int = 16,
                       insertion_start: np.ndarray | None = None) -> dict[str, float]:
    """Return the mean deletion and insertion AUC of saliency maps (Petsiuk et al., RISE).

    Deletion blanks the most salient pixels first (a faithful map makes the score fall fast: low
    AUC is good); insertion reveals them first over a blank or blurred start (high AUC is good).

    Args:
        predict: maps a (M, h, w, c) batch of model inputs to the (M,) target-class score;
            each image's ``steps + 1`` variants go through it as one batch.
        images: (N, h, w, c) model inputs.
        saliency: (N, h, w) maps at the input size.
        steps: how many equal fractions of the pixels are swapped along the path.
        insertion_start: (N, h, w, c) starting images for insertion (e.g. blurred); zeros if None.

    Returns:
        ``deletion`` and ``insertion``: mean areas under the score curves over [0, 1].
    """
    blank = np.zeros_like(images)
    starts = blank if insertion_start is None else insertion_start
    deletion, insertion = [], []
    for image, heat, start in zip(images, saliency, starts):
        order = np.argsort(-heat.ravel(), kind="stable")
        deleted = _perturbation_curves(predict, image, image, np.zeros_like(image), order, steps)
        inserted = _perturbation_curves(predict, image, start, image, order, steps)
        deletion.append(np.trapezoid(deleted, dx=1.0 / steps))
        insertion.append(np.trapezoid(inserted, dx=1.0 / steps))
    return {"n": len(deletion), "deletion": float(np.mean(deletion)),
            "insertion": float(np.mean(insertion))}
