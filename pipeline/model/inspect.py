"""A model as tumorlens sees it before a long run: its map, head, output check and speed.

Imports TensorFlow/Keras (through ``pipeline.model.loading``): keep it out of modules that must load fast.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import keras
import numpy as np

from pipeline.model.camgraph import HEAD_SHOWN, CamGraph
from pipeline.model.preprocess import prepare_pixels
from pipeline.model.spec import ModelSpec

GAP_DENSE_METHODS = ("cam",)  # read the Dense class weights, so need GAP -> Dense after the target
ANY_HEAD_METHODS = ("gradcam", "gradcampp", "layercam", "scorecam")  # gradients or forward passes
RANDOM_INPUTS = 3  # noise images the output check runs besides the blank one
TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; this leaves room for float16 heads
MAX_TIMED_CALLS = 50  # enough for a steady figure on a tiny model, within the time budget
NEEDS_GAP_DENSE = "needs the target followed by GlobalAveragePooling2D -> (Dropout) -> Dense"


@dataclasses.dataclass(frozen=True)
class GraphFacts:
    """Where a model's maps come from and what its head allows."""

    target: str  # path through nested models, e.g. "xception/block14_sepconv2_act"
    map_size: tuple[int, int, int]  # (height, width, channels) of the target's maps
    input_hw: tuple[int, int]  # (height, width) of one prepared scan
    head: tuple[str, ...]  # layers from the target to the output
    head_kind: str  # "GAP -> Dense", or the head's layers joined by arrows
    methods: dict[str, str | None]  # CAM method -> None when it applies, else why not

    @property
    def shrink(self) -> tuple[float, float]:
        """Return how many times smaller the map is than the input, in height and width."""
        return self.input_hw[0] / self.map_size[0], self.input_hw[1] / self.map_size[1]

    def resolution_line(self) -> str:
        """Return e.g. "224x224 -> 7x7, 32x smaller" (height x width)."""
        (h, w), (mh, mw, _) = self.input_hw, self.map_size
        high, wide = (_times(ratio) for ratio in self.shrink)
        smaller = f"{high}x smaller" if high == wide else f"{high}x smaller in height, {wide}x in width"
        return f"{h}x{w} -> {mh}x{mw}, {smaller}"

    def to_json(self) -> dict[str, Any]:
        """Return the facts as plain JSON values."""
        return {"target": self.target, "map_size": list(self.map_size), "input_hw": list(self.input_hw),
                "shrink": [round(ratio, 3) for ratio in self.shrink], "resolution": self.resolution_line(),
                "head": list(self.head), "head_kind": self.head_kind,
                "methods": {name: {"applies": why is None, "why_not": why}
                            for name, why in self.methods.items()}}


@dataclasses.dataclass(frozen=True)
class Throughput:
    """How fast the fused analysis pass ran on this machine."""

    batch_size: int
    calls: int  # timed calls, after one warm-up call
    seconds: float  # wall time of the timed calls

    @property
    def scans_per_second(self) -> float:
        """Return scans analysed per second."""
        return self.batch_size * self.calls / self.seconds

    @property
    def ms_per_scan(self) -> float:
        """Return milliseconds per scan."""
        return 1000 / self.scans_per_second

    def to_json(self) -> dict[str, Any]:
        """Return the measurement as plain JSON values."""
        return {"batch_size": self.batch_size, "calls": self.calls, "seconds": round(self.seconds, 4),
                "scans_per_second": round(self.scans_per_second, 2), "ms_per_scan": round(self.ms_per_scan, 3)}


def describe_graph(graph: CamGraph, spec: ModelSpec) -> GraphFacts:
    """Describe the target layer, its maps and the head of a built CAM graph.

    Args:
        graph: from ``Analyzer.ready()`` or ``build_cam_graph``.
        spec: the model's description (input size, channels).

    Returns:
        The target's path and map size, the head and which CAM methods apply to it.
    """
    width, height = spec.input_size
    shape = tuple(graph.model.outputs[1].shape[1:])
    if None in shape:  # a model of variable input size: measure the map on a blank input
        blank = np.zeros((1, height, width, spec.channels), np.float32)
        shape = tuple(graph.model(blank, training=False)[1].shape[1:])
    gap_dense = graph.class_kernel is not None
    methods = {**dict.fromkeys(GAP_DENSE_METHODS, None if gap_dense else NEEDS_GAP_DENSE),
               **dict.fromkeys(ANY_HEAD_METHODS)}
    return GraphFacts(graph.target, tuple(int(n) for n in shape), (height, width), graph.head,
                      "GAP -> Dense" if gap_dense else _arrows(graph.head), methods)


def output_warnings(model: keras.Model, spec: ModelSpec, samples: int = RANDOM_INPUTS,
                    seed: int = 0) -> list[str]:
    """Check the raw model's outputs on a blank and a few noise scans against the spec's ``output``.

    Args:
        model: the classifier as ``load_model`` returns it (its own output, not the CAM graph's).
        spec: the description whose ``output`` kind is checked.
        samples: how many noise scans to run besides the blank one.
        seed: of the noise.

    Returns:
        Warnings in words, empty when the outputs look like what the spec says.
    """
    outputs = _raw_outputs(model, spec, samples, seed)
    inputs = f"a blank and {samples} random scans"
    if outputs.ndim != 2:
        return [f"the model's output has shape {outputs.shape} on {inputs}; (scans, classes) is needed"]
    if not np.isfinite(outputs).all():
        return [f"the model outputs NaN or infinite values on {inputs}: its weights or its "
                "preprocessing are probably wrong"]
    warning = _OUTPUT_CHECKS[spec.output](outputs, inputs)
    return [warning] if warning else []


def throughput(analyzer: Any, batch_size: int = 16, seconds: float = 1.5, seed: int = 0) -> Throughput:
    """Time ``analyzer.analyze`` on a batch of prepared noise scans.

    Args:
        analyzer: a ready ``pipeline.explain.analysis.Analyzer``, or anything with its methods.
        batch_size: scans per call.
        seconds: the timed calls stop once they have taken this long (at least one call is made).
        seed: of the noise.

    Returns:
        Timed calls and their wall time, after one untimed warm-up call.
    """
    height, width, _ = analyzer.input_shape
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8)
    batch = np.stack([analyzer.prepare(pixels) for pixels in noise])
    analyzer.analyze(batch)  # warm-up: the first call of a batch size allocates and may trace
    calls, start = 0, time.perf_counter()
    while calls < MAX_TIMED_CALLS and (calls == 0 or time.perf_counter() - start < seconds):
        analyzer.analyze(batch)
        calls += 1
    return Throughput(batch_size, calls, time.perf_counter() - start)


def _times(ratio: float) -> str:
    return f"{ratio:.0f}" if abs(ratio - round(ratio)) < 0.05 else f"{ratio:.1f}"


def _arrows(head: tuple[str, ...]) -> str:
    if len(head) > HEAD_SHOWN:
        head = (*head[:3], f"({len(head) - 6} more layers)", *head[-3:])
    return " -> ".join(head)


def _raw_outputs(model: keras.Model, spec: ModelSpec, samples: int, seed: int) -> np.ndarray:
    width, height = spec.input_size
    rng = np.random.default_rng(seed)
    scans = [np.zeros((height, width, 3), np.uint8),
             *rng.integers(0, 256, (samples, height, width, 3), dtype=np.uint8)]
    batch = np.stack([prepare_pixels(pixels, spec) for pixels in scans])
    return np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), dtype=np.float64)


def _span(values: np.ndarray) -> str:
    return f"{values.min():.3g} to {values.max():.3g}"


def _in_unit_range(outputs: np.ndarray) -> bool:
    return bool(outputs.min() >= -TOLERANCE and outputs.max() <= 1 + TOLERANCE)


def _like_softmax(outputs: np.ndarray) -> bool:
    return _in_unit_range(outputs) and bool(np.all(np.abs(outputs.sum(axis=1) - 1) <= TOLERANCE))


def _check_probabilities(outputs: np.ndarray, inputs: str) -> str | None:
    if _like_softmax(outputs):
        return None
    sums = outputs.sum(axis=1)
    return (f'model.json says "output": "probabilities", but on {inputs} the model\'s outputs range '
            f"from {_span(outputs)} and their sums per scan from {_span(sums)}: a softmax lies in "
            '[0, 1] and sums to 1. If the model ends with raw class scores, set "output" to "logits"')


def _check_logits(outputs: np.ndarray, inputs: str) -> str | None:
    if not _like_softmax(outputs):
        return None
    return (f'model.json says "output": "logits", but on {inputs} every scan\'s outputs lie in '
            "[0, 1] and sum to 1: they look like probabilities. Set \"output\" to \"probabilities\", "
            "or tumorlens takes a softmax of probabilities and every prediction looks unsure")


def _check_sigmoid(outputs: np.ndarray, inputs: str) -> str | None:
    if _in_unit_range(outputs):
        return None
    return (f'model.json says "output": "sigmoid", but on {inputs} the model\'s output ranges from '
            f"{_span(outputs)}: a sigmoid lies in [0, 1]. It looks like a raw score; tumorlens reads "
            "one output unit only as a probability, so end the model with a sigmoid activation")


_OUTPUT_CHECKS = {"probabilities": _check_probabilities, "logits": _check_logits, "sigmoid": _check_sigmoid}
