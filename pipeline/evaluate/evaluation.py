"""Measure a model the way the product runs it: classification, localisation, neurons, faithfulness.

Scans are read and prepared by the same code as a job (``read_scan`` then ``Analyzer.prepare``)
and every CAM comes from ``Analyzer.analyze``, so the numbers describe what users get. A NIfTI
volume is measured slice by slice, labels and outlines from its mask volume (``evaluation_set``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.evaluate import metrics
from pipeline.data.annotations import Annotations, mask_volume_names, volume_case
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


def evaluation_set(folder: str | Path, annotations: Annotations | None = None) -> list[Example]:
    """Return what to evaluate in a folder: its images, and each NIfTI volume slice by slice.

    Images come from ``datasets.evaluation_examples`` (the TEST split when there is one). A volume,
    in whatever folder (``datasets.evaluation_volumes``), gives one example per axial slice
    ``read_scan`` keeps, grouped by its case (``volume_case``). With a mask volume
    (``Annotations.mask_volume``) a slice is tumor when its mask slice has a voxel above 0 (BraTS
    labels 1, 2 and 4 alike); without one, every slice takes its class folder's label.

    Raises:
        DataError: nothing to evaluate; a volume outside the class folders without a mask volume;
            a volume or mask that cannot be read; a mask whose shape differs from its image's.
    """
    annotations = annotations or Annotations()
    volumes = datasets.evaluation_volumes(folder)
    try:
        images = datasets.evaluation_examples(folder)
    except datasets.DataError:
        if not volumes:
            raise
        images = []
    return images + [example for path, label in volumes
                     for example in volume_examples(path, label, annotations)]


def volume_examples(path: Path, label: int | None, annotations: Annotations) -> list[Example]:
    """Return one example per head slice of a NIfTI volume, labelled as ``evaluation_set`` says."""
    from pipeline.io.nifti import head_frames, read_mask_volume, read_volume
    from pipeline.io.scans import ScanError

    mask_path = annotations.mask_volume(path)
    if mask_path is None and label is None:
        raise datasets.DataError(
            f"{path} lies outside the yes/no folders and has no mask volume to label its slices: "
            f"put one beside it (or in the annotations folder) as "
            f"{mask_volume_names(path.name)[0]}, "
            "or move the volume into a yes or no folder")
    try:
        volume = read_volume(path)
        mask = None if mask_path is None else read_mask_volume(mask_path, path, volume.shape)
    except ScanError as exc:
        raise datasets.DataError(f"cannot evaluate {path}: {exc}") from exc
    return [Example(path, label if mask is None else int(mask[:, :, k].any()),
                    volume_case(path.name), k) for k in head_frames(volume)]


def _where(example: Example) -> str:
    """Name an example in reports: its path, and its frame when it is one scan of several."""
    return str(example.path) if example.frame is None else f"{example.path} [frame {example.frame}]"


def _read(examples: Sequence[Example], skipped: list[dict], read) -> tuple[list, list]:
    """Return the readable examples and their frame's pixels (``read`` gives a file's scans)."""
    from pipeline.io.scans import ScanError

    kept, pixels = [], []
    for example in examples:
        try:
            scans = read(example.path)
            chosen = scans[:1] if example.frame is None else [
                s for s in scans if s.frame == example.frame]
            if not chosen:
                raise ScanError(f"it has no frame {example.frame}")
        except ScanError as exc:
            skipped.append({"path": _where(example), "error": str(exc)})
            continue
        pixels.append(chosen[0].pixels)
        kept.append(example)
    return kept, pixels


def _outline(example: Example, pixels: np.ndarray, annotations: Annotations,
             volumes) -> np.ndarray | None:
    """Return a scan's tumor mask: a volume slice's from its mask volume, else from annotations."""
    from pipeline.io.nifti import axial_view

    mask_path = annotations.mask_volume(example.path) if example.frame is not None else None
    if mask_path is None:
        return annotations.mask(example.path, (pixels.shape[1], pixels.shape[0]))
    return np.ascontiguousarray(axial_view(volumes(mask_path)[:, :, example.frame]))


def _batches(examples: Sequence[Example], analyzer, annotations: Annotations, batch_size: int,
             skipped: list[dict], transform=None) -> Iterator[Batch]:
    from pipeline.io.nifti import read_mask_volume
    from pipeline.io.scans import read_scan

    # A volume's slices come one after another: each file and mask volume is read once for them.
    read = functools.lru_cache(maxsize=1)(read_scan)
    volumes = functools.lru_cache(maxsize=1)(read_mask_volume)
    for start in range(0, len(examples), batch_size):
        chunk, pixels = _read(examples[start:start + batch_size], skipped, read)
        if not chunk:
            continue
        masks = [_outline(e, p, annotations, volumes) if e.label else None
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
            tally.paths.extend(_where(e) for e in batch.examples)
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
