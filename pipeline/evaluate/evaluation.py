"""Measure a model the way the product runs it: classification, localisation, neurons, faithfulness.

Scans are read and prepared by the same code as a job (``read_scan`` then ``Analyzer.prepare``)
and every CAM comes from ``Analyzer.analyze``, so the numbers describe what users get.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.evaluate import metrics
from pipeline.data.annotations import Annotations
from pipeline.data import datasets, label_review
from pipeline.data.datasets import Example
from pipeline.model.spec import ModelSpec

DEFAULT_BATCH = 16


@dataclass
class Batch:
    """Scans of one batch at their original size, their model inputs and region masks."""

    examples: list[Example]
    pixels: list[np.ndarray]
    inputs: np.ndarray
    masks: list[np.ndarray | None]


@dataclass
class Tally:
    """Running results of an evaluation, turned into a report at the end."""

    methods: Sequence[str]
    labels: list[int] = field(default_factory=list)
    tumor_probability: list[float] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # near-duplicate group or case of each scan
    paths: list[str] = field(default_factory=list)
    tumor_shares: list[float] = field(default_factory=list)  # outlined tumor scans: region / image
    outlined_probability: list[float] = field(default_factory=list)  # and their tumor probability
    scores: dict[str, list[dict]] = field(default_factory=dict)
    baseline: list[dict] = field(default_factory=list)
    neurons: object = None

    def __post_init__(self):
        self.scores = {method: [] for method in self.methods}


def sample(examples: Sequence[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """Return at most ``limit`` examples, a seeded random subset (all of them when None)."""
    if limit is None or limit >= len(examples):
        return list(examples)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(examples))[:limit])
    return [examples[i] for i in chosen]


def _read(examples: Sequence[Example], skipped: list[dict]) -> tuple[list, list]:
    """Return the readable examples and their first frame's pixels; record the others."""
    from pipeline.io.scans import ScanError, read_scan

    kept, pixels = [], []
    for example in examples:
        try:
            pixels.append(read_scan(example.path)[0].pixels)
        except ScanError as exc:
            skipped.append({"path": str(example.path), "error": str(exc)})
            continue
        kept.append(example)
    return kept, pixels


def _batches(examples: Sequence[Example], analyzer, annotations: Annotations, batch_size: int,
             skipped: list[dict], transform=None) -> Iterator[Batch]:
    for start in range(0, len(examples), batch_size):
        chunk, pixels = _read(examples[start:start + batch_size], skipped)
        if not chunk:
            continue
        masks = [annotations.mask(e.path, (p.shape[1], p.shape[0])) if e.label else None
                 for e, p in zip(chunk, pixels)]
        if transform is not None:  # a controlled shift moves the mask along with the scan
            shifted = [transform(p, m) for p, m in zip(pixels, masks)]
            pixels, masks = [p for p, _ in shifted], [m for _, m in shifted]
        inputs = np.stack([analyzer.prepare(p) for p in pixels])
        yield Batch(chunk, pixels, inputs, masks)


def _localise(cams: np.ndarray, batch: Batch) -> list[dict]:
    """Score each CAM, upsampled to its scan's original size, against the scan's mask."""
    from pipeline.io.heatmaps import peak, upsample

    scores = []
    for cam, pixels, mask in zip(cams, batch.pixels, batch.masks):
        if mask is not None and mask.any():
            heatmap = upsample(cam, (pixels.shape[1], pixels.shape[0]))
            scores.append(metrics.localisation_scores(heatmap, mask, peak(heatmap)))
    return scores


def _baseline(batch: Batch) -> list[dict]:
    return [metrics.localisation_scores(metrics.centre_map(mask.shape), mask)
            for mask in batch.masks if mask is not None and mask.any()]


def _update_neurons(tally: Tally, neurons: np.ndarray, labels: np.ndarray) -> None:
    from pipeline.explain.neurons import NeuronAccumulator

    if tally.neurons is None:
        tally.neurons = NeuronAccumulator(neurons.shape[1])
    tally.neurons.update(neurons, labels)


def _tally_batch(tally: Tally, analyzers: dict, batch: Batch) -> None:
    labels = np.array([e.label for e in batch.examples])
    for method, analyzer in analyzers.items():
        result = analyzer.analyze(batch.inputs)
        tally.scores[method].extend(_localise(result.cams, batch))
        if method == tally.methods[0]:
            tally.labels.extend(labels.tolist())
            tally.groups.extend(e.group for e in batch.examples)
            tally.paths.extend(str(e.path) for e in batch.examples)
            tally.tumor_probability.extend(np.asarray(result.tumor_probability).tolist())
            _update_neurons(tally, np.asarray(result.neurons), labels)
            for mask, probability in zip(batch.masks, np.asarray(result.tumor_probability)):
                if mask is not None and mask.any():
                    tally.tumor_shares.append(float(mask.mean()))
                    tally.outlined_probability.append(float(probability))
    tally.baseline.extend(_baseline(batch))


def faithfulness(analyzer, examples: Sequence[Example], limit: int, steps: int = 16) -> dict:
    """Return deletion/insertion AUCs of the analyzer's CAMs on up to ``limit`` tumor scans."""
    from pipeline.io.heatmaps import upsample

    tumors = [e for e in examples if e.label][:limit]
    if not tumors:
        return {"n": 0}
    batch = next(_batches(tumors, analyzer, Annotations(), len(tumors), []), None)
    if batch is None:
        return {"n": 0}
    height, width = batch.inputs.shape[1:3]
    cams = analyzer.analyze(batch.inputs).cams
    saliency = np.stack([upsample(cam, (width, height)) for cam in cams])
    predict = lambda x: np.asarray(analyzer.analyze(x.astype(np.float32)).tumor_probability)  # noqa: E731
    return metrics.deletion_insertion(predict, batch.inputs, saliency, steps)


def evaluate(spec: ModelSpec, examples: Sequence[Example], methods: Sequence[str] = ("gradcam",),
             annotations: Annotations | None = None, batch_size: int = DEFAULT_BATCH,
             faithful: int = 0, transform=None, review: dict[str, str] | None = None) -> dict:
    """Evaluate a model on labelled scans.

    Args:
        spec: the model to evaluate.
        examples: the labelled scans.
        methods: CAM methods to score; the first also gives classification and neuron numbers.
        annotations: where tumor outlines come from (masks beside images are always found).
        batch_size: scans per analysis pass.
        faithful: how many tumor scans get deletion/insertion curves per method (0 = none).
        transform: ``(pixels, mask) -> (pixels, mask)`` applied to each scan and its tumor mask
            (or None) after reading and before preparation, e.g. a controlled shift
            (``pipeline.evaluate.shifts.Shift``); None measures the scans as they are.
        review: {group: reason} of doubtful labels (``pipeline.data.label_review``): the
            classification is then also given without those groups, never relabelled.

    Returns:
        A JSON-ready report: ``classification`` (with ``intervals``: 95 % bootstrap intervals that
        draw whole near-duplicate groups or cases; ``errors``: the misclassified scans by
        group; ``sensitivity_by_size``: on outlined tumor scans, by the tumor's share of the
        image), ``neurons``, ``localisation`` (per method,
        with ``centre_baseline``), ``skipped`` (unreadable scans and why), ``faithfulness``
        when asked, ``seconds``.
    """
    from pipeline.explain.analysis import Analyzer

    started = time.perf_counter()
    annotations = annotations or Annotations()
    analyzers = {method: Analyzer(spec, method) for method in methods}
    tally = Tally(list(methods))
    skipped: list[dict] = []
    for batch in _batches(examples, analyzers[methods[0]], annotations, batch_size, skipped,
                          transform):
        _tally_batch(tally, analyzers, batch)
    if not tally.labels:
        raise datasets.DataError("none of the scans could be read: "
                         + "; ".join(f"{s['path']}: {s['error']}" for s in skipped[:3]))
    threshold = spec.decision_threshold
    report = {
        "model": spec.name,
        "classification": {
            **metrics.classification_metrics(tally.labels, tally.tumor_probability, threshold),
            "threshold": threshold,  # the model's operating point (model.json, default 0.5)
            "intervals": metrics.bootstrap_intervals(tally.labels, tally.tumor_probability, tally.groups,
                                                     threshold=threshold),
            "errors": metrics.errors_by_group(tally.labels, tally.tumor_probability, tally.groups,
                                              tally.paths, threshold),
            "sensitivity_by_size": metrics.sensitivity_by_size(tally.tumor_shares,
                                                                 tally.outlined_probability,
                                                                 threshold=threshold),
        },
        **({"without_label_review": without_review(tally, review, threshold)} if review else {}),
        "neurons": tally.neurons.result(top=10).summary(),
        "localisation": {**{m: metrics.summarise(s) for m, s in tally.scores.items()},
                         "centre_baseline": metrics.summarise(tally.baseline)},
        "skipped": skipped,
    }
    if faithful:
        report["faithfulness"] = {m: faithfulness(a, examples, faithful)
                                  for m, a in analyzers.items()}
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def without_review(tally: Tally, review: dict[str, str], threshold: float) -> dict:
    """Return the classification without the groups under label review, and why each is there."""
    keep = [group not in review for group in tally.groups]
    labels = [label for label, k in zip(tally.labels, keep) if k]
    probability = [p for p, k in zip(tally.tumor_probability, keep) if k]
    groups = [g for g, k in zip(tally.groups, keep) if k]
    excluded = {group: {"reason": reason, "scans": tally.groups.count(group)}
                for group, reason in review.items() if group in tally.groups}
    if not labels:
        return {"excluded": excluded, "n": 0}
    return {"excluded": excluded, **metrics.classification_metrics(labels, probability, threshold),
            "intervals": metrics.bootstrap_intervals(labels, probability, groups, threshold=threshold)}


def domain_reports(spec: ModelSpec, folders: Sequence[Path], methods: Sequence[str],
                   annotations: Annotations, split: str, only_annotated: bool = False) -> dict:
    """Evaluate every folder's ``split`` with ``methods``; keys are the folder names."""
    reports = {}
    for folder in folders:
        examples = datasets.find_split(folder, split)
        if only_annotated:
            examples = [e for e in examples if e.label and annotations.has(e.path)]
        if examples:
            reports[folder.name] = evaluate(spec, examples, methods, annotations,
                                            review=label_review.read_review(folder))
    return reports


def choose_method(reports: dict) -> tuple[str, dict]:
    """Return the CAM method with the best mean pointing game over the domains, and the means."""
    from pipeline.explain.analysis import METHODS

    means = {}
    for method in METHODS:
        scores = [r["localisation"][method] for r in reports.values()
                  if r["localisation"].get(method, {}).get("n")]
        if scores:
            means[method] = {key: float(np.mean([s[key] for s in scores]))
                             for key in ("pointing", "energy", "iou")}
    if not means:
        return "gradcam", means
    return max(means, key=lambda m: (means[m]["pointing"], means[m]["energy"])), means
