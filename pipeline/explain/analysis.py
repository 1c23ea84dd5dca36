"""One fused pass per batch: probabilities, class activation maps and GAP neuron vectors.

Importing this module does not import TensorFlow: ``prepare`` is numpy/Pillow only, and the model
loads on the first ``analyze`` call, so a worker process can fork before it touches TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.explain.distribution import Distribution, load_distribution
from pipeline.model.preprocess import prepare_pixels
from pipeline.model.spec import ModelSpec

if TYPE_CHECKING:
    from pipeline.model.camgraph import CamGraph
    from pipeline.explain.cams import CamMethod

METHODS = ("cam", "gradcam", "gradcampp", "scorecam", "layercam")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchAnalysis:
    """Everything one pass yields for a batch of N scans."""

    probabilities: np.ndarray  # (N, K) float32
    cams: np.ndarray  # (N, h, w) float32 in [0, 1] at the target layer's resolution
    neurons: np.ndarray  # (N, C) float32 GAP of the target layer's maps
    class_names: tuple[str, ...]
    predicted: np.ndarray  # (N,) int: the class each map explains
    tumor_probability: np.ndarray  # (N,) float32: sum over the positive classes
    # (N,) float32 distance from the training distribution over its limit (above 1: outside the
    # model's experience), or None when the model ships no in-distribution statistics
    ood_score: np.ndarray | None = None


class Analyzer:
    """Classify batches and explain each decision with the chosen CAM method."""

    def __init__(self, spec: ModelSpec, method: str = "gradcam") -> None:
        if method not in METHODS:
            raise ValueError(f'unknown CAM method "{method}"; choose one of {", ".join(METHODS)}')
        self.spec, self.method = spec, method
        self._lock = threading.Lock()
        self._run: Callable[[Any], Any] | None = None
        self.model: Any = None  # the Keras model as saved, loaded once with the graph
        self.graph: CamGraph | None = None
        self.distribution: Distribution | None = None  # loaded with the model
        self.prepared = False  # ready() succeeded: later calls cost nothing

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Return (height, width, channels) of one prepared scan."""
        width, height = self.spec.input_size
        return height, width, self.spec.channels

    def prepare(self, scan_pixels: np.ndarray) -> np.ndarray:
        """Return one model input for a scan's pixels (numpy/Pillow only, thread-safe)."""
        return prepare_pixels(scan_pixels, self.spec)

    def ready(self) -> CamGraph:
        """Load the model, build its analysis and run it once on a blank input, before any scan.

        Every fault of the model itself (an unloadable file, no usable target layer, an output
        that disagrees with the spec, a graph that cannot be traced) surfaces here, once, instead
        of as a failure of each scan.

        Returns:
            The built graph: its target layer's path, head and class kernel.

        Raises:
            pipeline.model.loading.ModelError: the model cannot be analysed, in words.
        """
        from pipeline.model.loading import ModelError  # Keras: loaded by the pass anyway

        if self.prepared:
            return self.graph
        try:
            self.analyze(np.zeros((1, *self.input_shape), np.float32))
        except ModelError:
            raise
        except Exception as exc:  # a shape of model the graph builder does not handle
            log.exception("preparing the analysis of %s failed", self.spec.name)
            raise ModelError(f"its analysis cannot be prepared ({type(exc).__name__}: {exc})") from exc
        self.prepared = True
        return self.graph

    def analyze(self, batch: np.ndarray) -> BatchAnalysis:
        """Run the fused pass on a prepared batch.

        Args:
            batch: float32 (N, height, width, channels) from ``prepare``.

        Returns:
            Probabilities, maps, neuron vectors and predicted classes of the N scans.

        Raises:
            ValueError: the batch does not have the model's input shape.
            pipeline.model.loading.ModelError: the model cannot be analysed with this method.
        """
        batch = self._checked(batch)
        if len(batch) == 0:
            return self._empty()
        probabilities, cams, neurons, chosen = (t.numpy() for t in self._compiled()(batch))
        tumor = probabilities[:, list(self.spec.positive_indices)].sum(axis=1)
        ood = None if self.distribution is None else self.distribution.scores(neurons)
        return BatchAnalysis(probabilities, cams, neurons, self.spec.class_names,
                             chosen.astype(np.int64), tumor.astype(np.float32), ood)

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(f"expected a batch of shape (N, {', '.join(map(str, self.input_shape))}) "
                             f"from Analyzer.prepare, got {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _empty(self) -> BatchAnalysis:
        k = len(self.spec.class_names)
        self._compiled()
        _, height, width, channels = self.graph.model.outputs[1].shape
        return BatchAnalysis(np.zeros((0, k), np.float32), np.zeros((0, height, width), np.float32),
                             np.zeros((0, channels), np.float32), self.spec.class_names,
                             np.zeros(0, np.int64), np.zeros(0, np.float32),
                             None if self.distribution is None else np.zeros(0, np.float32))

    def _compiled(self) -> Callable[[Any], Any]:
        with self._lock:
            if self._run is None:
                self._run = self._build()
        return self._run

    def _build(self) -> Callable[[Any], Any]:
        import tensorflow as tf

        from pipeline.model.camgraph import build_cam_graph
        from pipeline.model.loading import load_model

        self.model = load_model(self.spec)
        self.graph = build_cam_graph(self.model, self.spec)
        if self.spec.distribution_path is not None:
            self.distribution = load_distribution(self.spec.distribution_path)
        method = make_method(self.method, self.graph)
        signature = [tf.TensorSpec((None, *self.input_shape), tf.float32)]
        return tf.function(lambda images: fused_pass(self.graph, method, self.spec, images),
                           input_signature=signature)


def make_method(name: str, graph: CamGraph) -> CamMethod:
    """Return the CAM method ``name`` bound to what it needs from the graph."""
    from pipeline.explain.cams import METHOD_CLASSES

    cls = METHOD_CLASSES[name]
    if name == "cam":
        return cls(graph.require_class_kernel())
    if name == "gradcam" and graph.class_kernel is not None:
        # Behind GAP -> Dense, d(score_c)/dA_k(i, j) = W[k, c] / (h * w) at every position, so
        # Grad-CAM's channel weights are CAM's divided by h * w: the same map once normalised,
        # with no backward pass (tests/pipeline/explain/test_cam_correctness.py holds it to the tape).
        return METHOD_CLASSES["cam"](graph.class_kernel)
    if name == "scorecam":
        return cls(lambda images: graph.model(images, training=False)[0])
    return cls()


def fused_pass(graph: CamGraph, method: CamMethod, spec: ModelSpec, images: Any) -> tuple:
    """Return (probabilities, maps, neurons, chosen) from one forward pass (traced by tf.function)."""
    import tensorflow as tf

    from pipeline.explain.cams import CamInputs

    with tf.GradientTape() as tape:
        scores, features = graph.model(images, training=False)
        probabilities = tf.nn.sigmoid(scores) if graph.activation == "sigmoid" else tf.nn.softmax(scores)
        chosen = choose_class(scores, probabilities, spec)
        picked = tf.gather(scores, chosen, axis=1, batch_dims=1)
    # Each image's score depends on its own maps only, so the summed gradient is per image.
    gradients = tape.gradient(picked, features) if method.needs_gradients else None
    maps = method.maps(CamInputs(images, features, gradients, chosen))
    return probabilities, maps, tf.reduce_mean(features, axis=(1, 2)), chosen


def choose_class(scores: Any, probabilities: Any, spec: ModelSpec) -> Any:
    """Return the predicted class of each row: the one its map explains.

    Without a ``threshold`` in the spec: the argmax (for one sigmoid unit, the positive class when
    p >= 0.5). With one, the scan is tumor when its positive classes' probabilities sum to at
    least the threshold, and the class is the likeliest of that side.
    """
    import tensorflow as tf

    if spec.threshold is None:
        if spec.output != "sigmoid":
            return tf.argmax(scores, axis=-1, output_type=tf.int32)
        positive = spec.positive_indices[0]
        return tf.where(scores[:, positive] >= 0, positive, 1 - positive)
    is_positive = tf.constant([i in spec.positive_indices for i in range(len(spec.class_names))])
    tumor = tf.reduce_sum(tf.where(is_positive, probabilities, 0.0), axis=1) >= spec.threshold
    side = tf.equal(is_positive[None, :], tumor[:, None])  # the classes of the side called
    return tf.argmax(tf.where(side, probabilities, -1.0), axis=-1, output_type=tf.int32)
